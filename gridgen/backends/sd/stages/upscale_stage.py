"""The upscale stage of a cell: validates the `upscaler` params and turns a base image into the upscaled one.

It dispatches on the upscaler's family: pixel resampling, spandrel model files, the SD x4
upscaler, and the img2img families (latent and pixel hires fix, SD upscale) that rerun the cell's
own model. Everything but pixel resampling is kept in the stage cache under (base image key + the
params that upscaler reads), so a grid that varies a later stage, or a param this upscaler ignores
(say `noise_level` next to a Lanczos value), computes each upscaled image once. Pixel resampling
is cheaper to redo than to keep, so it is not cached.

`demofusion_scale` is DemoFusion as a mode of the cell rather than a value of the upscaler axis: set, it wins over
`upscaler` (which must then be none or demofusion) and over the upscale size params, and the result is that many
times the base image. DemoFusion's phases are cached apart from the target size, so a grid over
`demofusion_scale: 2, 3, 4` computes each phase once; `phases_rendered` counts the phases actually computed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from gridgen.backends.base import BackendContext, ParamProblem
from gridgen.backends.sd.denoise import sampler_options
from gridgen.backends.sd.images.resample import model_upscale, resample, target_size
from gridgen.backends.sd.models.locate import resolve_upscale_pipeline
from gridgen.backends.sd.stages import x4
from gridgen.backends.sd.stages.cache import StageCache, stage_key
from gridgen.backends.sd.stages.upscalers import Upscaler, cell_upscaler, parse_upscaler
from gridgen.errors import ModelError

if TYPE_CHECKING:
    from gridgen.backends.sd.stages import second_pass


_SIZE_PARAMS = ("upscale_by", "upscale_width", "upscale_height")
# What each family reads besides its own name and the size; anything else cannot change its output.
_FAMILY_PARAMS = {
    "pixel": (),
    "model": ("tile_size", "tile_overlap"),
    # The x4 model redraws with the cell's seed, sampler and prompts too: with an input image they are not in the
    # base image's key.
    "sd-x4": ("noise_level", "upscale_prompt", "upscale_steps", "upscale_cfg_scale", "prompt", "negative_prompt",
              "seed", "sampler", "schedule", *sampler_options.RECIPE_READS),
    "latent": ("hires_steps", "hires_denoise"),
    "hires": ("hires_steps", "hires_denoise", "tile_size", "tile_overlap"),
    "sd-upscale": ("hires_steps", "hires_denoise", "tile_size", "tile_overlap"),
    "demofusion": ("cosine_scale_1", "cosine_scale_2", "cosine_scale_3", "sigma", "stride"),
}
# The families whose inner upscaler or own img2img works in tiles.
_TILED = ("model", "hires", "sd-upscale")


def reads(upscaler: Upscaler, params: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The params an upscaler's output depends on, besides the base image: with `demofusion_scale` set in `params`,
    that scale stands for the size params, which it overrides."""
    size = ("demofusion_scale",) if params and params.get("demofusion_scale") else _SIZE_PARAMS
    return (*size, *_FAMILY_PARAMS[upscaler.family])


def demofusion_scale_problems(params: dict[str, Any]) -> list[ParamProblem]:
    """`demofusion_scale` beside an upscaler other than none or demofusion: the cell would silently drop one."""
    if not params.get("demofusion_scale"):
        return []
    try:
        upscaler = parse_upscaler(str(params["upscaler"]))
    except ValueError:
        return []  # the upscaler's own check reports it
    if upscaler.name in ("none", "demofusion"):
        return []
    return [ParamProblem("demofusion_scale", f"demofusion_scale {params['demofusion_scale']} runs DemoFusion on the "
                                             f"cell's image, so it cannot be combined with upscaler {upscaler.text}; "
                                             f"set upscaler to none (or demofusion), or drop demofusion_scale")]


class UpscaleStage:
    def __init__(self, context: BackendContext, cache: StageCache, base_model: Callable[[dict[str, Any]], tuple]):
        """`base_model(params)` loads the cell's model and returns (components, prompt encoder, the guidance at a
        size of a regional cell's regions for a whole-image redraw, or None for a cell without regions)."""
        self.context = context
        self.cache = cache
        self.base_model = base_model
        self._found: dict[tuple, Path | ModelError] = {}
        self._x4: x4.X4Model | None = None
        self.phases_rendered = 0  # DemoFusion phases computed rather than found in the stage cache

    def _resolve(self, resolver, value: str) -> Path:
        # Remembered per value, failures too: every cell of a grid names the same few files.
        key = (resolver, value)
        if key not in self._found:
            models_dir = Path(self.context.models_dir) if self.context.models_dir else None
            try:
                self._found[key] = resolver(value, Path(self.context.spec_dir), models_dir)
            except ModelError as exc:
                self._found[key] = exc
        found = self._found[key]
        if isinstance(found, ModelError):
            raise found
        return found

    def _model_file(self, value: str) -> Path:
        from gridgen.backends.sd.stages.upscale_models import resolve_upscaler_file

        return self._resolve(resolve_upscaler_file, value)

    def _x4_folder(self, value: str) -> Path:
        return self._resolve(resolve_upscale_pipeline, value)

    def validate(self, params: dict[str, Any]) -> list[ParamProblem]:
        """Problems with a cell's upscale params, found before rendering (a model file is read to identify it)."""
        from gridgen.backends.sd.stages.upscale_models import load_upscale_model

        try:
            parse_upscaler(str(params["upscaler"]))
        except ValueError as exc:
            return [ParamProblem("upscaler", str(exc))]
        upscaler = cell_upscaler(params)
        problems = demofusion_scale_problems(params)
        inner = upscaler.inner or upscaler
        if inner.is_model_file:
            try:
                load_upscale_model(self._model_file(inner.name))
            except ModelError as exc:
                problems.append(ParamProblem("upscaler", str(exc)))
        if upscaler.family in _TILED:
            tile, overlap = int(params["tile_size"]), int(params["tile_overlap"])
            if tile and overlap >= tile:
                problems.append(ParamProblem("tile_overlap", f"tile_overlap {overlap} must be smaller than "
                                                             f"tile_size {tile}"))
        if upscaler.family == "sd-x4":
            try:
                info = x4.read_x4_info(self._x4_folder(upscaler.name))
            except ModelError as exc:
                return [ParamProblem("upscaler", str(exc))]
            level = int(params["noise_level"])
            if level > info.max_noise_level:
                problems.append(ParamProblem("noise_level", f"noise_level {level} is over the maximum of this x4 "
                                                            f"model ({info.max_noise_level}, its max_noise_level)"))
        return problems

    def key(self, upscaler: Upscaler, params: dict[str, Any], base_key: str) -> str:
        read = {name: params.get(name) for name in reads(upscaler, params)}
        return stage_key("upscale", {"upscaler": upscaler.text, **read}, base_key)

    def apply(self, base: Image.Image, base_key: str, params: dict[str, Any]) -> Image.Image:
        """The cell's upscaled image, from the cache when another cell already computed it."""
        from gridgen.backends.sd.stages import demofusion, second_pass

        upscaler = cell_upscaler(params)
        scale = int(params.get("demofusion_scale") or 0)
        size = (base.width * scale, base.height * scale) if scale else target_size(
            base.width, base.height, float(params["upscale_by"]), params.get("upscale_width"),
            params.get("upscale_height"))
        if upscaler.family == "pixel":
            return base if upscaler.name == "none" else resample(base, size, upscaler.name)
        key = self.key(upscaler, params, base_key)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if upscaler.family == "sd-x4":
            image = resample(x4.x4_upscale(self._load_x4(upscaler.name), base, params), size)
        elif upscaler.family == "model":
            image = self._enlarger(upscaler, params)(base, size)
        else:
            parts, prompts, regional = self.base_model(params)
            if upscaler.family == "sd-upscale":
                image = second_pass.sd_upscale(parts, prompts, base, self._enlarger(upscaler.inner, params), size,
                                               params)
            elif upscaler.family == "hires":
                image = second_pass.pixel_hires(parts, prompts, base, self._enlarger(upscaler.inner, params), size,
                                                params, regional)
            elif upscaler.family == "demofusion":
                image = demofusion.upscale(parts, prompts, base, size, params, self._phase_cache(upscaler, params,
                                                                                                  base_key))
            else:
                image = second_pass.latent_hires(parts, prompts, base, upscaler.name, size, params, regional)
        self.cache.put(key, image)
        return image

    def _phase_cache(self, upscaler: Upscaler, params: dict[str, Any], base_key: str):
        """DemoFusion's phases in the stage cache, keyed apart from the size so every target size shares them."""
        read = {name: params.get(name) for name in _FAMILY_PARAMS[upscaler.family]}

        def cached(phase: int, compute):
            key = stage_key("demofusion-phase", {**read, "phase": phase}, base_key)
            image = self.cache.get(key)
            if image is None:
                image = compute()
                self.phases_rendered += 1
                self.cache.put(key, image)
            return image

        return cached

    def _enlarger(self, upscaler: Upscaler, params: dict[str, Any]) -> second_pass.Enlarge:
        """(image, size) -> image for a pixel resampler or a model file."""
        from gridgen.backends.sd.models.load import pick_device
        from gridgen.backends.sd.stages.upscale_models import load_upscale_model

        if upscaler.family == "pixel":
            return lambda image, size: resample(image, size, upscaler.name)
        model = load_upscale_model(self._model_file(upscaler.name))
        device, tile, overlap = pick_device(self.context.device), int(params["tile_size"]), int(params["tile_overlap"])
        return lambda image, size: model_upscale(model, image, size, device, tile, overlap)

    def _load_x4(self, value: str) -> x4.X4Model:
        from gridgen.backends.sd.models.load import pick_device, pick_dtype

        path = self._x4_folder(value)
        if self._x4 is None or self._x4.path != path:
            self._x4 = None  # one x4 model in memory at a time
            device = pick_device(self.context.device)
            self._x4 = x4.load_x4(path, device, pick_dtype(self.context.dtype, device))
        return self._x4

    def stats(self) -> list[str]:
        """Lines for the run summary."""
        return [f"demofusion: {self.phases_rendered} phases rendered"] if self.phases_rendered else []

    def close(self) -> None:
        self._x4 = None
