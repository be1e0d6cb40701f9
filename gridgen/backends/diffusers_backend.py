"""The built-in `diffusers` backend: Stable Diffusion txt2img, img2img, inpaint, depth2img, instruct-pix2pix, unCLIP
variations and the x4 upscaler on diffusers' models and schedulers.

It validates a cell's params from config files alone, keeps the last model loaded, and renders a
batch of cells that share a sampler, step count and size while each keeps its own prompt,
negative prompt, seed, CFG scale and CLIP skip. Everything that depends on the model kind is the
cell's `Kind`'s (`sd.kinds`), resolved once per question; the pieces live in `gridgen.backends.sd`.
This module imports no torch: validation and planning read configs only, and `sd.render` (model
loading, conditioning, the batched denoising) loads torch with the first render.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from gridgen import prompt_tags
from gridgen.backends import diffusers_paths
from gridgen.backends.base import BackendContext, BatchOutOfMemory, ParamProblem, Result
from gridgen.backends.sd import param_checks
from gridgen.backends.sd.adapters import networks
from gridgen.backends.sd.adapters.lora import LoraError
from gridgen.backends.sd.denoise import multidiffusion, sampler_options, seamless, token_merging
from gridgen.backends.sd.denoise.controls import options as latent_controls
from gridgen.backends.sd.denoise.samplers import scheduler_choice
from gridgen.backends.sd.hdr import brackets as hdr
from gridgen.backends.sd.images import region_layout
from gridgen.backends.sd.images.decoding import Decoder
from gridgen.backends.sd.images.inputs import ImageInputs
from gridgen.backends.sd.kinds import edit, registry, unclip
from gridgen.backends.sd.kinds.base import Kind
from gridgen.backends.sd.kinds.depth import DepthMaps
from gridgen.backends.sd.models.locate import ModelInfo, read_model_info, resolve_model, resolve_vae, vae_factor
from gridgen.backends.sd.models.model_cache import ModelCache
from gridgen.backends.sd.stages.cache import StageCache, stage_key
from gridgen.backends.sd.stages.segment_stage import SamStage
from gridgen.backends.sd.stages.upscale_stage import UpscaleStage
from gridgen.backends.sd.stages.upscalers import cell_upscaler
from gridgen.backends.sd.text import ella_setup, regions, styles, wildcards
from gridgen.errors import ModelError
from gridgen.params import CORE_PARAMS, Registry, params_of_stage

if TYPE_CHECKING:
    from gridgen.backends.base import Cell
    from gridgen.backends.sd.denoise.cpu_shards import BatchShards
    from gridgen.backends.sd.models.load import Components
    from gridgen.backends.sd.text.clip import PromptEncoder
    from gridgen.backends.sd.text.clip_xl import SdxlPromptEncoder
    from gridgen.params import Param

# This backend implements every core param.
SUPPORTED_PARAMS = frozenset(param.name for param in CORE_PARAMS)
# Params no base image reads: cells differing only in these share a base image.
POST_PARAMS = params_of_stage("plan", "post", "output")
_DEFAULTS = Registry().defaults()


def has_post_stages(params: dict[str, Any]) -> bool:
    """Whether a cell's image goes on from its base render: a SAM edit, an upscaler or a resize."""
    return bool(params.get("sam_prompt") or params.get("out_width") or params.get("out_height")
                or cell_upscaler(params).name != "none")


def base_params(params: dict[str, Any], kind_reads: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The params a cell's base image depends on; `kind_reads` are the later stages' params its kind reads too."""
    # In a SAM edit the inpainting params belong to the edit, not to the base image it starts from.
    later = POST_PARAMS | (edit.EDIT_PARAMS if params.get("sam_prompt") else frozenset())
    if kind_reads:  # unCLIP (its image embedding) and the x4 upscaler (its low-res image): no start latents
        later = later - kind_reads | {"denoise"}
    return ella_setup.stage_params({name: value for name, value in params.items() if name not in later})


class DiffusersBackend:
    name = "diffusers"

    def __init__(self, context: BackendContext):
        self.context = context
        self._load_key: Hashable | None = None
        self._loaded: Hashable | None = None  # the model cache's key of what is loaded
        self._components: Components | None = None
        self.prompts: PromptEncoder | SdxlPromptEncoder | None = None  # the loaded model's text-embedding cache
        self.ella = ella_setup.EllaRuntime()
        self.variations = unclip.ImageVariations()
        self.networks: networks.Networks | None = None  # the loaded model's embeddings and LoRAs
        self._resolved: dict[tuple, Path | None | ModelError] = {}
        spill = Path(context.out_dir) / ".cache" if context.out_dir else None
        self.cache = StageCache(context.cache_bytes, spill)
        self.models = ModelCache(context.model_cache_bytes)
        self.inputs = ImageInputs(Path(context.spec_dir))
        self.upscaling = UpscaleStage(context, self.cache, self._loaded_model)
        self.segmenting = SamStage(context, self.cache)
        self.shards: BatchShards | None = None  # CPU batch sharding, made on the first CPU load
        self.decoder = Decoder()
        self.depths = DepthMaps(context, self.cache, self.inputs, self._resolve)

    def supported_params(self) -> set[str]:
        return set(SUPPORTED_PARAMS)

    def extra_params(self) -> list[Param]:
        return []

    def locate(self, param: str, value: str) -> Path | None:
        return diffusers_paths.locate(self.context, param, value)

    # Resolution: the same answers for validate, the keys and render.

    def _model_path(self, params: dict[str, Any]) -> Path:
        return self._resolve(resolve_model, str(params["model"]))

    def _vae_path(self, params: dict[str, Any]) -> Path | None:
        return self._resolve(resolve_vae, str(params["vae"]))

    def _resolve(self, resolver, value: str):
        # Failed lookups are remembered too: a grid repeats the same missing name in every cell.
        key = (resolver, value, self.context.spec_dir, self.context.models_dir)
        if key not in self._resolved:
            try:
                self._resolved[key] = resolver(value, Path(self.context.spec_dir), self._models_dir())
            except ModelError as exc:
                self._resolved[key] = exc
        found = self._resolved[key]
        if isinstance(found, ModelError):
            raise found.with_traceback(None)  # one cached error, raised afresh each time
        return found

    def _models_dir(self) -> Path | None:
        return Path(self.context.models_dir) if self.context.models_dir else None

    def _wildcard_folders(self) -> list[Path]:
        return wildcards.folders(Path(self.context.spec_dir), self._models_dir())

    def _style_files(self) -> list[Path]:
        return styles.files(Path(self.context.spec_dir), self._models_dir())

    def _info(self, params: dict[str, Any]) -> ModelInfo:
        return read_model_info(self._model_path(params), str(params.get("prediction") or "auto"))

    def _kind(self, params: dict[str, Any]) -> tuple[Kind, ModelInfo | None]:
        """The cell's kind and its model's configs; for a model that cannot be read (validate() reports it),
        the kind planning assumes."""
        try:
            info = self._info(params)
        except ModelError:
            return registry.UNREADABLE, None
        return registry.kind_of(params, info), info

    def _size(self, params: dict[str, Any]) -> tuple[int, int]:
        if params.get("width") and params.get("height"):
            return int(params["width"]), int(params["height"])
        kind, info = self._kind(params)
        found = kind.size(params, info, self.inputs)
        if found:
            return found
        native = info.native_size if info else 0
        return int(params.get("width") or native), int(params.get("height") or native)

    def validate(self, params: dict[str, Any]) -> list[ParamProblem]:
        params = {**_DEFAULTS, **params}
        problems: list[ParamProblem] = []
        info = None
        try:
            info = self._info(params)
        except ModelError as exc:
            problems.append(ParamProblem("model", str(exc)))
        else:
            problems += registry.kind_problems(params, str(params["model"]), info.in_channels, info.sdxl, info.unclip)
        factor = info.vae_factor if info else None
        try:
            vae = self._vae_path(params)
            factor = vae_factor(vae) if vae and vae.is_dir() else factor
        except ModelError as exc:
            problems.append(ParamProblem("vae", str(exc)))
        problems += param_checks.sampling_problems(params, factor, info.text_layers if info else None)
        problems += param_checks.text_problems(params, self._wildcard_folders(), self._style_files(), self.inputs.load)
        problems += [ParamProblem("lora", message, severity) for severity, message in
                     networks.lora_problems(params.get("lora"), Path(self.context.spec_dir), self._models_dir())]
        if regions.active(params):  # a region prompt's own LoRA tags (`regional.expand`)
            tags = prompt_tags.take_loras(str(params.get("prompt") or ""))[1]
            problems += [ParamProblem("prompt", f"<lora:...> tag: {message}", severity) for severity, message in
                         networks.lora_problems(tags, Path(self.context.spec_dir), self._models_dir())]
        problems += [ParamProblem(param, message) for param, message in
                     networks.embedding_problems(params, Path(self.context.spec_dir), self._models_dir(),
                                                 info.config if info else None, bool(info and info.sdxl))]
        problems += ella_setup.check_cell(params, info.path if info else None, self._resolve)
        problems += self.inputs.check(params)
        kind = registry.kind_of(params, info) if info else None
        if kind:
            problems += kind.problems(params, info, self)
        problems += param_checks.technique_problems(params, kind, info, self._size(params))
        sam_input = self.inputs.size(params["init_image"]) if params.get("init_image") else self._size(params)
        problems += self.segmenting.validate(params, sam_input)
        return problems + self.upscaling.validate(params)

    def load_key(self, params: dict[str, Any]) -> Hashable:
        # Planning asks for keys before validation has spoken, so an unresolvable name stands for itself.
        params = {**_DEFAULTS, **params}
        try:
            model = str(self._model_path(params))
        except ModelError:
            model = str(params["model"])
        try:
            vae = self._vae_path(params)
            vae_key = str(vae) if vae else "auto"
        except ModelError:
            vae_key = str(params["vae"])
        return model, vae_key, tuple(file for file, _ in self._lora_set(params))

    def _lora_set(self, params: dict[str, Any]) -> networks.LoraSet:
        try:
            return networks.lora_set(params.get("lora"), Path(self.context.spec_dir), self._models_dir())
        except LoraError:
            return tuple((value, 0.0) for value in params.get("lora") or [])  # validate() reports it

    def describe_load(self, params: dict[str, Any]) -> str:
        model, vae, loras = self.load_key(params)
        return f"model {model} (vae {vae})" + (f" + lora {', '.join(loras)}" if loras else "")

    def batch_key(self, params: dict[str, Any]) -> Hashable:
        params = {**_DEFAULTS, **params}
        kind, _ = self._kind(params)
        params = kind.as_read(params)
        # The scheduler choice, not the sampler's name: names that build the same scheduler can share a batch.
        choice = scheduler_choice(str(params["sampler"]), str(params["schedule"]))
        # One LoRA set and weights per batch: adapter weights apply to the whole UNet call; tiled diffusion's
        # windows and the VAE's tiling apply to the whole batch too.
        return (self.load_key(params), self._lora_set(params), choice, str(params["prediction"]), int(params["steps"]),
                *self._size(params), ella_setup.batch_part(params, self._resolve), kind.batch_part(params),
                sampler_options.batch_part(params), seamless.batch_part(params), token_merging.batch_part(params),
                multidiffusion.batch_part(params), str(params["vae_tiling"]))

    def render(self, cells: list[Cell]) -> Iterator[Result]:
        # The batch is finished before anything is yielded, so no torch mode leaks into the caller. An HDR cell
        # is a row per bracket, merged back into one result.
        for rows in hdr.batches(cells, max(1, int(self.context.max_batch))):
            yield from hdr.merged(self._render_batch(rows))

    def _ensure_loaded(self, params: dict[str, Any]) -> Components:
        from gridgen.backends.sd import render  # torch loads with the first render, not at validation

        return render.ensure_loaded(self, params)

    def _loaded_model(self, params: dict[str, Any]) -> tuple[Components, PromptEncoder, Callable | None]:
        """The cell's model with the cell's own LoRAs, its prompt cache, and for a regional cell its regions'
        guidance at a size, for stages that run the model again (hires fix, SD upscale): a batch whose regions carry
        LoRAs of their own ends with any of its LoRA sets active."""
        import torch

        from gridgen.backends.sd import render

        parts = self._ensure_loaded(params)
        with torch.inference_mode():  # adapters loaded during inference switch only there
            self.networks.use_loras(self._lora_set(params))
        regional = partial(render.redraw_guidance, self, params) if regions.active(params) else None
        return parts, self.prompts, regional

    def _base_key(self, params: dict[str, Any]) -> str:
        if edit.mode_of(params) == "input":  # the file as it is: only its bytes matter
            return stage_key("input", {}, self.inputs.fingerprint(params))
        kind, _ = self._kind(params)
        return stage_key("txt2img", base_params(kind.as_read(params), kind.base_reads),
                         f"{self.load_key(params)}{self.inputs.fingerprint(params)}")

    def _render_batch(self, cells: list[Cell]) -> list[Result]:
        """Base images from the stage cache or one denoising batch, then each cell's post stages."""
        import torch

        from gridgen.backends.sd.images import images

        batch = [wildcards.expand_params(styles.apply({**_DEFAULTS, **cell.params}, self._style_files()),
                                         self._wildcard_folders()) for cell in cells]
        keys = [self._base_key(p) for p in batch]
        bases: dict[str, tuple[Image.Image | Future, dict[str, Any], dict[str, float]]] = {}  # a render's is a Future
        for key, params in zip(keys, batch, strict=True):
            if edit.mode_of(params) == "input":  # a SAM edit's own input image: nothing to generate
                bases[key] = (self.inputs.load("init_image", params["init_image"]), {}, {})
        for key in dict.fromkeys(keys):
            hit = self.cache.get(key)
            if hit is not None:
                bases[key] = (*hit, {})
        # Cells that differ only in later stages share one base render, within a batch and across batches.
        todo = {key: params for key, params in zip(keys, batch, strict=True) if key not in bases}
        self.cache.stats.hits += len(keys) - len(set(keys))  # cells served by another cell of this batch
        if todo:
            try:
                rendered = self._denoise(list(todo.values()))
            except torch.OutOfMemoryError as exc:
                self._free_device_memory()
                raise BatchOutOfMemory(len(todo)) from exc
            for key, (image, metadata, timings) in zip(todo, rendered, strict=True):
                image.add_done_callback(partial(self._cache_decoded, key, metadata))
                bases[key] = (image, metadata, timings)
        results = []
        for cell, params, key in zip(cells, batch, keys, strict=True):
            base, base_metadata, timings = bases[key]
            found = base_metadata.get(regions.FOUND)  # prompt-mode regions, for the layout drawing
            base_metadata = {name: value for name, value in base_metadata.items() if name != regions.FOUND}
            files = edit.change_map_file(params, self.inputs, self._size(params))  # the map a differential cell used
            if not has_post_stages(params):  # the image goes to the writers as a future: nothing here waits
                layout = {}
                if regions.active(params):  # except for the region layout, drawn over the decoded image
                    base = base.result() if isinstance(base, Future) else base
                    layout = region_layout.files(base, params, self.inputs.load, found)
                results.append(Result(cell, base, metadata={**base_metadata, **self._cell_metadata(params)},
                                      timings=timings, files={**files, **layout}))
                continue
            base = base.result() if isinstance(base, Future) else base
            started = time.perf_counter()
            post = {**params, regions.FOUND: found} if found is not None else params  # for a regional hires fix
            edited = self.segmenting.apply(base, key, post)
            image = self.upscaling.apply(edited.image, edited.key, post)
            image = images.resize(image, params.get("out_width"), params.get("out_height"))
            metadata = {**base_metadata, **edited.metadata, **self._cell_metadata(params)}
            files = {name: extra.resize(image.size, Image.Resampling.BILINEAR) for name, extra in files.items()}
            timings = {**timings, "post": time.perf_counter() - started}
            files = {**files, **edited.files, **region_layout.files(image, params, self.inputs.load, found)}
            results.append(Result(cell, image, metadata=metadata, timings=timings, files=files))
        return results

    def _cache_decoded(self, key: str, metadata: dict[str, Any], decoded: Future) -> None:
        if decoded.exception() is None:  # a failed decode is reported by the cells' writes
            self.cache.put(key, (decoded.result(), metadata))

    @staticmethod
    def _cell_metadata(params: dict[str, Any]) -> dict[str, Any]:
        metadata = {"model": str(params["model"]), "sampler": str(params["sampler"])}
        if "wildcards" in params:  # the prompts as rendered, and what each wildcard picked
            metadata.update({field: params[field] for field in ("prompt", "negative_prompt", "wildcards")})
        elif params.get("styles"):  # the prompts with their styles, as A1111 records them
            metadata.update({field: params[field] for field in ("prompt", "negative_prompt")})
        return metadata

    def _denoise(self, batch: list[dict[str, Any]]) -> list[tuple[Future, dict[str, Any], dict[str, float]]]:
        """Batched denoising (`render.denoise_batch`); each image is a future of its decode.

        One pass, unless regional cells meet cells whose guided prediction is adjusted (CFG rescale, dynamic
        thresholding, colour grading): the adjustments act per guidance row and regional cells have one row per
        region, so those two groups denoise as two passes."""
        from gridgen.backends.sd import render

        regional = [regions.active(params) for params in batch]
        if not any(regional) or not any(map(latent_controls.adjusts_prediction, batch)):
            return render.denoise_batch(self, batch)
        apart = {flag: render.denoise_batch(self, [p for p, r in zip(batch, regional, strict=True) if r == flag])
                 for flag in (True, False)}
        return [apart[flag].pop(0) for flag in regional]

    def fit_batch(self, params: dict[str, Any], wanted: int) -> int:
        """The largest batch up to `wanted` whose denoising fits the device's free memory (`render.fit_batch`)."""
        if wanted <= 1 or edit.mode_of(params) == "input":
            return wanted  # (a SAM edit of a given image has no base denoising to fit)
        from gridgen.backends.sd import render

        return render.fit_batch(self, {**_DEFAULTS, **params}, wanted)

    def speed_options(self) -> dict[str, Any]:
        """What the journal records about how a cell was computed, beyond device and dtype."""
        attention = "unknown"
        if self._components is not None:
            processors = {type(p).__name__ for p in self._components.unet.attn_processors.values()}
            attention = ",".join(sorted(processors))
        return {"compile": self.context.compile, "channels_last": self.context.channels_last,
                "attention": attention, "cpu_shards": self.shards.workers if self.shards else 1}

    def _free_device_memory(self) -> None:
        if "torch" not in sys.modules:  # nothing was loaded (a spec refused by validation): nothing to free
            return
        from gridgen.backends.sd import render

        render.free_device_memory()

    def stats(self) -> list[str]:
        """Lines for the run summary."""
        lines = [self.cache.stats.line(), f"models: {self.models.loads} loaded, {self.models.hits} reused from memory"]
        if self.prompts is not None:
            lines.append(f"text embeddings: {self.prompts.cache.hits} cached, {self.prompts.cache.misses} encoded")
        return lines + self.ella.stats() + self.depths.stats() + self.variations.stats() + self.upscaling.stats()

    def close(self) -> None:
        self.decoder.close()
        self.decoder = Decoder()  # a closed backend may render again
        self.upscaling.close()
        self.models.clear()
        self.segmenting.close()
        if self.shards is not None:
            self.shards.close()
            self.shards = None
        self.depths.close()
        self._components = None
        self.prompts = None
        self.ella.close()
        self.variations.close()
        self.networks = None
        self._load_key = self._loaded = None
        self.cache.clear()
        self._free_device_memory()
