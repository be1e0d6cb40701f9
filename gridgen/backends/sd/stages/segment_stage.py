"""The SAM edit stage, Inpaint Anything's loop on a cell's image: a prompt -> SAM's masks -> dilation -> an inpainter.

The input is the cell's base image: its `init_image`, or its own txt2img output. `inpaint_mode`
says what is redrawn: `remove` and `fill` redraw the (dilated) object, `replace` keeps the object
and redraws everything else. The inpainter is OpenCV's Telea, a LaMa file, or a Stable Diffusion
inpainting model (which reads the cell's prompt, seed, sampler, `denoise`, `mask_blur` and
`padding_mask_crop`). The result is pasted back through the blurred mask; `replace` then restores
the object's pixels exactly.

Both steps are stage-cached: SAM's masks under (input image key, model, prompt), the edit under
that plus the params its inpainter reads, so a grid over `sam_mask x dilate x inpainter` runs SAM
once per input and prompt, and Telea or LaMa once per mask whatever the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from gridgen.backends.base import BackendContext, ParamProblem
from gridgen.backends.sd.denoise import sampler_options
from gridgen.backends.sd.denoise.inference import inference_mode
from gridgen.backends.sd.kinds import edit
from gridgen.backends.sd.kinds.channels import CHANNELS
from gridgen.backends.sd.models.locate import read_model_info, resolve_model
from gridgen.backends.sd.stages.cache import StageCache, stage_key
from gridgen.backends.sd.stages.segment_params import DEFAULT_DILATE, Inpainter, parse_inpainter, parse_sam_prompt
from gridgen.errors import ModelError
from gridgen.tiny import tiny_folder

if TYPE_CHECKING:
    from gridgen.backends.sd.models.load import Components
    from gridgen.backends.sd.stages import segment
    from gridgen.backends.sd.text.clip import PromptEncoder
    from gridgen.backends.sd.text.clip_xl import SdxlPromptEncoder

_MASK_PARAMS = ("sam_model", "sam_prompt", "sam_mask", "dilate", "inpaint_mode", "inpainter", "mask_blur")
# What an SD inpainter reads besides the mask: the cell's own generation settings.
_SD_PARAMS = ("prompt", "negative_prompt", "seed", "steps", "cfg_scale", "sampler", "schedule", "clip_skip",
              "denoise", "padding_mask_crop", "inpaint_full_res", "inpainting_fill", "image_mask_weight",
              *sampler_options.RECIPE_READS)


@dataclass
class Edited:
    """A cell's image after the SAM stage, the files to save with it, its cache key and facts for its metadata.

    The files are the dilated SAM mask and an overlay: the input with the mask tinted and the prompt drawn.
    """

    image: Image.Image
    files: dict[str, Image.Image]
    key: str
    metadata: dict[str, Any]


def dilation(params: dict[str, Any]) -> int:
    value = params.get("dilate")
    return int(value) if value is not None else DEFAULT_DILATE[str(params["inpaint_mode"])]


class SamStage:
    def __init__(self, context: BackendContext, cache: StageCache):
        self.context = context
        self.cache = cache
        self._sam: segment.Sam | None = None
        self._sd: tuple[Path, Components, PromptEncoder | SdxlPromptEncoder] | None = None

    # Finding files and models

    def _dirs(self) -> tuple[Path, Path | None]:
        return Path(self.context.spec_dir), Path(self.context.models_dir) if self.context.models_dir else None

    def _sam_path(self, params: dict[str, Any]) -> Path:
        from gridgen.backends.sd.stages import segment

        return segment.resolve_sam(str(params["sam_model"]), *self._dirs())

    def _lama_path(self, name: str) -> Path:
        from gridgen.backends.sd.images.inpainters import resolve_lama

        return resolve_lama(name, *self._dirs())

    def _sd_path(self, inpainter: Inpainter) -> Path:
        shipped = tiny_folder(inpainter.name)
        if shipped is not None and not shipped.is_dir():
            raise ModelError(f"inpainter {inpainter.name!r}: the embedded tiny inpainting model is not in this "
                             f"install ({shipped}); use opencv-telea, lama:<file> or an SD inpainting model folder")
        return resolve_model(inpainter.name, *self._dirs())

    # Validation

    def validate(self, params: dict[str, Any], input_size: tuple[int, int] | None) -> list[ParamProblem]:
        """Problems with a cell's SAM params; reads configs and LaMa files, loads no diffusion model."""
        from gridgen.backends.sd.images import inpainters

        if not params.get("sam_prompt"):
            return []
        problems = []
        prompt = parse_sam_prompt(params["sam_prompt"])
        outside = prompt.outside(*input_size) if input_size else None
        if outside:
            problems.append(ParamProblem("sam_prompt", f"sam_prompt {prompt.text!r}: {outside}"))
        try:
            self._sam_path(params)
        except ModelError as exc:
            problems.append(ParamProblem("sam_model", str(exc)))
        inpainter = parse_inpainter(str(params["inpainter"]))
        if params["inpaint_mode"] == "fill" and inpainter.family != "sd":
            problems.append(ParamProblem("inpainter", f"inpaint_mode fill with {params['inpainter']}, which reads no "
                                                      f"prompt: the object is erased as by remove; use an SD "
                                                      f"inpainting model to fill it from the prompt", "warning"))
        try:
            if inpainter.family == "lama":
                inpainters.load_lama(self._lama_path(inpainter.name))
            elif inpainter.family == "sd":
                info = read_model_info(self._sd_path(inpainter))
                if edit.unet_in_channels(info.path) not in (CHANNELS["img2img"], CHANNELS["inpaint"]):
                    raise ModelError(f"inpainter {inpainter.name!r} is not a Stable Diffusion (inpainting) model")
        except ModelError as exc:
            problems.append(ParamProblem("inpainter", str(exc)))
        return problems

    # Rendering

    def key(self, params: dict[str, Any], base_key: str) -> str:
        inpainter = parse_inpainter(str(params["inpainter"]))
        names = _MASK_PARAMS + (_SD_PARAMS if inpainter.family == "sd" else ())
        return stage_key("sam-edit", {name: params.get(name) for name in names}, base_key)

    def masks(self, image: Image.Image, base_key: str, params: dict[str, Any]):
        """SAM's three masks and scores for the cell's prompt on `image`, from the cache when known."""
        from gridgen.backends.sd.stages import segment

        key = stage_key("sam", {"sam_model": str(self._sam_path(params)), "sam_prompt": params["sam_prompt"]},
                        base_key)
        found = self.cache.get(key)
        if found is None:
            found = segment.segment(self._load_sam(params), image, parse_sam_prompt(params["sam_prompt"]))
            self.cache.put(key, found)
        return found

    def apply(self, base: Image.Image, base_key: str, params: dict[str, Any]) -> Edited:
        """The cell's edited image (`base` itself when it has no `sam_prompt`), from the cache when known."""
        from gridgen.backends.sd.images import masks as mask_ops

        if not params.get("sam_prompt"):
            return Edited(base, {}, base_key, {})
        key = self.key(params, base_key)
        found = self.cache.get(key)
        if found is None:
            found = self._edit(base, base_key, params)
            self.cache.put(key, found)
        image, mask, facts = found
        prompt = parse_sam_prompt(params["sam_prompt"])
        marked = mask_ops.overlay(base, mask, prompt.points, prompt.labels, prompt.box)
        return Edited(image, {"mask": mask, "overlay": marked}, key, {"sam": facts})

    @inference_mode
    def _edit(self, image: Image.Image, base_key: str, params: dict[str, Any]
              ) -> tuple[Image.Image, Image.Image, dict[str, Any]]:
        from gridgen.backends.sd.images import masks as mask_ops
        from gridgen.backends.sd.stages import segment

        image = image.convert("RGB")
        masks, scores = self.masks(image, base_key, params)
        index = segment.index_of(scores, str(params["sam_mask"]))
        object_mask = mask_ops.dilate(segment.pick(masks, scores, str(index)), dilation(params))
        facts = {"mask_index": index, "predicted_iou": round(float(scores[index]), 4), "dilate": dilation(params),
                 "mask_pixels": int(masks[index].sum()), "model_path": str(self._sam_path(params))}
        mode = str(params["inpaint_mode"])
        redraw = ImageOps.invert(object_mask) if mode == "replace" else object_mask
        result = self._inpaint(image, redraw, params)
        if mode == "replace":  # the blur must not reach into the object: its pixels stay exactly as they were
            result = mask_ops.paste_back(result, image, object_mask)
        return result, object_mask, facts

    def _inpaint(self, image: Image.Image, mask: Image.Image, params: dict[str, Any]) -> Image.Image:
        from gridgen.backends.sd.images import inpainters
        from gridgen.backends.sd.images import masks as mask_ops
        from gridgen.backends.sd.models.load import pick_device

        inpainter = parse_inpainter(str(params["inpainter"]))
        soft = mask_ops.blur(mask, int(params["mask_blur"]))
        if inpainter.family == "telea":
            return mask_ops.paste_back(image, inpainters.telea(image, mask), soft)
        if inpainter.family == "lama":
            model = inpainters.load_lama(self._lama_path(inpainter.name))
            return mask_ops.paste_back(image, inpainters.lama(model, image, mask, pick_device(self.context.device)),
                                       soft)
        return self._sd_inpaint(self._load_sd(inpainter), image, mask, params)

    def _sd_inpaint(self, loaded: tuple[Path, Components, PromptEncoder | SdxlPromptEncoder], image: Image.Image,
                    mask: Image.Image, params: dict[str, Any]) -> Image.Image:
        from gridgen.backends.sd.denoise.guidance import guide_for
        from gridgen.backends.sd.denoise.recipe import Recipe, scheduler_for
        from gridgen.backends.sd.images import images
        from gridgen.backends.sd.text.clip_xl import added_pair

        path, parts, prompts = loaded
        info = read_model_info(path)
        factor = info.vae_factor
        if edit.crop_padding(params) is not None:
            size = (info.native_size, info.native_size)
        else:
            size = tuple(max(factor, round(side / factor) * factor) for side in image.size)
        prepared = edit.prepare([(image, mask, params)], size, [image.size], parts.device)
        skip = int(params["clip_skip"])
        requests = [(str(params["prompt"]), skip)], [(str(params["negative_prompt"]), skip)]
        text = prompts.conditioning(*requests)
        # The cell's sampler options (eta, ENSD, the sigma settings, variation seeds) reach this pass as the base's.
        recipe = Recipe(scheduler_for(params, parts.scheduler_config), [int(params["seed"])], parts.device,
                        cells=[params], factor=factor)
        guide = guide_for(parts.unet, text.cond, text.uncond, [float(params["cfg_scale"])],
                          masks=(text.cond_mask, text.uncond_mask), **added_pair(prompts, *requests, *size))
        latents = edit.denoise(parts, prepared, recipe, guide, int(params["steps"]), float(params["denoise"]))
        (decoded,) = images.decode(parts.vae, latents)
        return prepared.finish[0](decoded)

    def _load_sam(self, params: dict[str, Any]) -> segment.Sam:
        from gridgen.backends.sd.models.load import pick_device
        from gridgen.backends.sd.stages import segment

        path = self._sam_path(params)
        if self._sam is None or self._sam.path != path:
            self._sam = None  # one SAM in memory at a time
            self._sam = segment.load_sam(path, pick_device(self.context.device))
        return self._sam

    def _load_sd(self, inpainter: Inpainter) -> tuple[Path, Components, PromptEncoder | SdxlPromptEncoder]:
        from gridgen.backends.sd.models.load import load_components, pick_device, pick_dtype
        from gridgen.backends.sd.text.clip_xl import make_prompt_encoder

        path = self._sd_path(inpainter)
        if self._sd is None or self._sd[0] != path:
            self._sd = None
            device = pick_device(self.context.device)
            parts = load_components(path, None, device, pick_dtype(self.context.dtype, device),
                                    read_model_info(path).config)
            self._sd = (path, parts, make_prompt_encoder(parts))
        return self._sd

    def close(self) -> None:
        self._sam = None
        self._sd = None
