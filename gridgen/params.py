"""The registry of every parameter a grid can set: names, aliases, types, ranges and defaults.

This is the single place a parameter is declared. Names match case-, space-, dash- and
underscore-insensitively (`CFG Scale` == `cfgscale` == `cfg_scale`), as the Infinity Grid
Generator matches them. `coerce` turns a raw YAML or command-line value into the parameter's type
and raises `ValueError` with a message that says what was expected. Backends say which of these
parameters they understand (and may add their own), so validation covers third-party backends too.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from typing import Any

from gridgen.backends.sd.denoise import samplers
from gridgen.backends.sd.kinds.channels import CHANNELS
from gridgen.backends.sd.stages import segment_params, upscalers
from gridgen.param_decl import Param
from gridgen.technique_params import TECHNIQUE_PARAMS


def normalize_key(name: Any) -> str:
    """The form names are compared in: lower case, no spaces, underscores, dashes or brackets."""
    return re.sub(r"[\s_\-\[\]]+", "", str(name).lower())


def _choose_format(text: str) -> str | None:
    value = str(text).strip().lower()
    return {"jpeg": "jpg"}.get(value, value) if value in {"png", "jpg", "jpeg", "webp"} else None


# `pipeline` values: auto (the kind the model's UNet says) or one kind; spellings users know map onto them.
PIPELINE_KINDS = ("auto", *CHANNELS)
_PIPELINE_ALIASES = {"ip2p": "instruct-pix2pix", "pix2pix": "instruct-pix2pix", "inpainting": "inpaint",
                     "depth": "depth2img", "upscale": "x4-upscaler", "upscaler": "x4-upscaler", "x4": "x4-upscaler",
                     "variation": "unclip", "image-variation": "unclip"}
PREDICTIONS = ("auto", "epsilon", "v_prediction")


def _choose_pipeline(text: str) -> str | None:
    value = str(text).strip().lower().replace("_", "-").replace(" ", "-")
    value = _PIPELINE_ALIASES.get(value, value)
    return value if value in PIPELINE_KINDS else None


def _choose_prediction(text: str) -> str | None:
    value = str(text).strip().lower().replace("-", "_")
    value = {"eps": "epsilon", "v": "v_prediction", "v_pred": "v_prediction"}.get(value, value)
    return value if value in PREDICTIONS else None


def _choose_sampler(text: str) -> str | None:
    found = samplers.find_sampler(text)
    return found.name if found else None


def _choose_ella(text: str) -> str | None:
    # `on`/`off` may reach here as YAML booleans; anything else names a checkpoint file or folder.
    value = str(text).strip()
    switch = {"off": "off", "false": "off", "no": "off", "none": "off", "0": "off",
              "on": "on", "true": "on", "yes": "on", "1": "on"}
    return switch.get(value.lower(), value or None)


def _choose_token_length(text: str) -> str | None:
    value = str(text).strip().lower()
    if value in ("flexible", "none"):
        return "flexible"
    return str(int(value)) if value.isdigit() and 1 <= int(value) <= 512 else None


def _choose_ella_mode(text: str) -> str | None:
    return {"ella": "ella", "ella+clip": "ella+clip", "ellaclip": "ella+clip"}.get(normalize_key(text))


CORE_PARAMS: tuple[Param, ...] = (
    Param("prompt", "str", "", "The text the image should show.", stage="text"),
    Param("negative_prompt", "str", "", "What the image should not show.",
          aliases=("negative", "neg_prompt"), stage="text"),
    Param("prompt_replace", "str", None,
          "`find = replace`: replaces text in the prompt and negative prompt. Several may apply to one cell.",
          aliases=("replace",), stage="plan", accumulate=True),
    Param("seed", "seed", 1, "Noise seed; -1 picks one random seed for the whole grid (recorded in the output).",
          min=-1, max=2**32 - 1),
    Param("steps", "int", 20, "Number of denoising steps.", min=1, max=1000),
    Param("cfg_scale", "float", 7.0,
          "Classifier-free guidance scale; 1 turns guidance off, 0 is the unconditional prediction alone.",
          aliases=("cfg", "scale", "guidance_scale"), min=0, max=100),
    Param("sampler", "choice", "Euler a", "The sampling algorithm, by its A1111 name.",
          aliases=("sampler_name", "sampler_index"), choose=_choose_sampler,
          choices_help=", ".join(s.name for s in samplers.SAMPLERS)),
    Param("schedule", "choice", "automatic",
          "Noise schedule type; `automatic` is the sampler's own (Karras for the `... Karras` samplers).",
          aliases=("schedule_type", "scheduler"), choose=samplers.find_schedule,
          choices_help=", ".join(samplers.SCHEDULES)),
    Param("width", "int", None, "Image width in pixels (default: the model's native size).",
          min=8, max=8192, multiple_of=8),
    Param("height", "int", None, "Image height in pixels (default: the model's native size).",
          min=8, max=8192, multiple_of=8),
    Param("out_width", "int", None, "Resize the saved image to this width.", min=1, max=16384, stage="output"),
    Param("out_height", "int", None, "Resize the saved image to this height.", min=1, max=16384, stage="output"),
    Param("model", "model", "gridgen-tiny",
          "A diffusers folder, a .safetensors/.ckpt checkpoint, a name in models_dir, a cached Hugging Face id, "
          "or `gridgen-tiny` (the embedded model).",
          aliases=("checkpoint", "ckpt", "sd_model_checkpoint")),
    Param("vae", "model", "auto", "A VAE to use instead of the model's own; `auto` keeps the model's.",
          aliases=("sd_vae",)),
    Param("lora", "path", None,
          "`file[:weight]`: a LoRA (diffusers or A1111/kohya .safetensors) applied at `weight` (default 1). "
          "Several may apply to one cell; the last weight given for a file wins.",
          aliases=("loras", "lora_weights"), accumulate=True),
    Param("embedding", "path", None,
          "A textual-inversion file (.pt, .safetensors, .bin) whose name then works as a word in prompts; "
          "files in an `embeddings/` folder next to the spec or in the models folder work without this.",
          aliases=("embeddings", "textual_inversion"), stage="text", accumulate=True),
    Param("pipeline", "choice", "auto",
          "The pipeline kind; auto follows the model's UNet (4 channels txt2img, 5 depth2img, 7 x4 upscaler, "
          "8 instruct-pix2pix, 9 inpaint; unclip when a 4-channel UNet also reads an image embedding).",
          aliases=("pipeline_kind",), choose=_choose_pipeline,
          choices_help=", ".join(PIPELINE_KINDS)),
    Param("prediction", "choice", "auto",
          "What the UNet predicts: auto (the model's config; 768-v for SD 2.x single files), epsilon or "
          "v_prediction.", aliases=("prediction_type", "parameterization"), choose=_choose_prediction,
          choices_help=", ".join(PREDICTIONS)),
    Param("clip_skip", "int", 1, "Use the text encoder's N-th layer from the end (A1111's CLIP skip).",
          aliases=("clip_stop_at_last_layers",), min=1, max=12, stage="text"),
    # The upscaler's parser raises its own ValueError, with a did-you-mean, for a value it cannot place.
    Param("upscaler", "choice", "none",
          "How the base image is enlarged: a resampler (none, nearest, bilinear, bicubic, lanczos), a model file "
          "(.pth/.safetensors), sd-x4, a latent hires fix (latent, latent-bicubic, ...), hires:<upscaler>, "
          "sd-upscale or demofusion (or demofusion_scale, which overrides this).",
          choose=upscalers.canonical_upscaler, choices_help="see the README's upscaler section", stage="post"),
    Param("upscale_by", "float", 2.0, "The upscaler's scale factor (demofusion_scale, when set, overrides it).",
          aliases=("upscale", "scale_by"), min=1, max=8, stage="post"),
    Param("upscale_width", "int", None, "Upscale to this width instead of by a factor (alone: keeps the aspect).",
          aliases=("hr_resize_x",), min=8, max=16384, stage="post"),
    Param("upscale_height", "int", None, "Upscale to this height instead of by a factor (alone: keeps the aspect).",
          aliases=("hr_resize_y",), min=8, max=16384, stage="post"),
    Param("tile_size", "int", 512, "Tile side in pixels for tiled upscaling; 0 runs the whole image at once.",
          min=0, max=8192, stage="post"),
    Param("tile_overlap", "int", 32, "Pixels neighbouring tiles share; their seams are blended across it.",
          min=0, max=4096, stage="post"),
    # One param, two readers, each checking its own range: the SD x4 upscaler (a post stage) on any model, and
    # on an unCLIP model also the base image.
    Param("noise_level", "int", 20,
          "Noise added to a conditioning input: the SD x4 upscaler's low-resolution image (0-350, up to the x4 "
          "model's max_noise_level; the upscaler stage's, or the base image's when the model is an x4 upscaler) "
          "and, on an unCLIP model, the CLIP embedding of init_image (0-999: more noise, looser variations).",
          min=0, max=999, stage="post"),
    Param("upscale_prompt", "str", None, "The SD x4 upscaler's prompt (default: the cell's prompt).", stage="post"),
    Param("upscale_steps", "int", 20, "Denoising steps of the SD x4 upscaler.", min=1, max=1000, stage="post"),
    Param("upscale_cfg_scale", "float", 9.0, "CFG scale of the SD x4 upscaler.", aliases=("upscale_cfg",),
          min=0, max=100, stage="post"),
    Param("hires_steps", "int", 0, "Steps of the img2img pass of hires fix and SD upscale; 0: the cell's steps.",
          aliases=("hr_second_pass_steps",), min=0, max=1000, stage="post"),
    Param("hires_denoise", "float", 0.5,
          "Denoising strength of that img2img pass: 0 keeps the enlarged image, 1 redraws it from noise.",
          aliases=("hr_denoise",), min=0, max=1, stage="post"),
    Param("format", "choice", None, "Image file format: png, jpg or webp (default: the grid's format).",
          aliases=("image_format",), choose=_choose_format, choices_help="png, jpg, webp", stage="output"),
    Param("ella", "choice", "off",
          "ELLA (SD 1.5 only): a T5 encoder plus a timestep-aware connector replace CLIP conditioning. `on` finds "
          "ella-sd1.5-tsc-t5xl.safetensors in the models folder or Hugging Face cache; or give its path.",
          choose=_choose_ella, choices_help="off, on, or the path of an ELLA checkpoint"),
    Param("ella_text_encoder", "model", "google/flan-t5-xl",
          "The T5 encoder ELLA reads: a transformers folder or a cached Hugging Face id.",
          aliases=("t5", "t5_encoder", "ella_t5")),
    Param("token_length", "choice", "128",
          "T5 tokens ELLA sees: a number pads or truncates every prompt to it (ELLA trained at 128); "
          "`flexible` keeps each prompt's own length.",
          aliases=("ella_token_length", "t5_token_length"), choose=_choose_token_length,
          choices_help="flexible, or a whole number from 1 to 512", stage="text"),
    Param("ella_mode", "choice", "ella",
          "`ella`: the UNet sees ELLA's 64 tokens; `ella+clip`: ELLA's 64 then CLIP's 77, keeping trigger words.",
          choose=_choose_ella_mode, choices_help="ella, ella+clip"),
)


def _choose_sam_mask(text: str) -> str | None:
    value = str(text).strip().lower()
    return value if value in ("best", "0", "1", "2") else None


def _choose_inpaint_mode(text: str) -> str | None:
    value = str(text).strip().lower()
    return value if value in segment_params.INPAINT_MODES else None


INPAINTING_FILLS = ("original", "fill", "latent_noise", "latent_nothing")


def _choose_inpainting_fill(text: str) -> str | None:
    # A1111 stores the masked content as an index (0 fill, 1 original, 2 latent noise, 3 latent nothing).
    value = {"0": "fill", "1": "original", "2": "latent_noise", "3": "latent_nothing"}.get(str(text).strip(), text)
    return {normalize_key(name): name for name in INPAINTING_FILLS}.get(normalize_key(value))


def _choose_inpainter(text: str) -> str | None:
    try:
        return segment_params.canonical_inpainter(text)
    except ValueError:
        return None


# img2img, inpaint and the SAM-prompted edit (image inputs are paths relative to the spec file).
IMAGE_EDIT_PARAMS: tuple[Param, ...] = (
    Param("init_image", "path", None, "Start image for img2img and inpaint (the input of a SAM edit).",
          aliases=("image", "input_image")),
    Param("denoise", "float", 0.75, "Denoising strength: 0 keeps the init image, 1 redraws it from noise.",
          aliases=("denoising_strength", "strength"), min=0, max=1),
    Param("image_cfg_scale", "float", None,
          "instruct-pix2pix's image guidance (A1111's Image CFG Scale; default 1.5): how closely the edit keeps "
          "to init_image; 1 turns it off, higher keeps more of the image.",
          aliases=("image_guidance_scale", "image_cfg"), min=0, max=100),
    Param("mask", "path", None, "Inpaint mask image (white = redraw), the size of init_image.",
          aliases=("mask_image", "init_mask")),
    Param("mask_blur", "int", 4, "Gaussian blur of the mask's edge in pixels, softening the paste back.",
          min=0, max=256),
    Param("inpaint_full_res", "bool", False,
          "Inpaint only the masked region: crop around the mask, redraw the crop at the model's size, paste back.",
          aliases=("inpaint_only_masked",)),
    Param("padding_mask_crop", "int", None,
          "Pixels of context around the mask's box when cropping (setting it turns the crop on; default 32).",
          aliases=("inpaint_full_res_padding", "only_masked_padding"), min=0, max=4096),
    Param("inpainting_fill", "choice", "original",
          "What the masked part starts from (A1111's masked content; matters below denoise 1): original, fill "
          "(filled from its surroundings), latent_noise or latent_nothing.",
          aliases=("masked_content", "inpaint_fill"), choose=_choose_inpainting_fill,
          choices_help=", ".join(INPAINTING_FILLS)),
    Param("sam_prompt", "str", None,
          "Segment Anything prompt in input pixels: `point X Y`, `box X1 Y1 X2 Y2`, or {points, labels, box}.",
          parse=segment_params.canonical_sam_prompt, stage="post"),
    Param("sam_model", "model", "gridgen-tiny-sam", "A transformers SamModel folder or cached id "
          "(facebook/sam-vit-base, -large, -huge); default the embedded tiny SAM.", stage="post"),
    Param("sam_mask", "choice", "best", "Which of SAM's three masks: best (highest predicted IoU), 0, 1 or 2.",
          choose=_choose_sam_mask, choices_help="best, 0, 1, 2", stage="post"),
    Param("dilate", "int", None, "Grow the SAM mask by this many pixels (default 15 remove, 50 fill, 0 replace).",
          aliases=("dilate_kernel_size",), min=0, max=1024, stage="post"),
    Param("inpaint_mode", "choice", "fill",
          "remove: erase the object; fill: redraw it from the prompt; replace: keep it, redraw everything else.",
          choose=_choose_inpaint_mode, choices_help=", ".join(segment_params.INPAINT_MODES), stage="post"),
    Param("inpainter", "choice", "gridgen-tiny-inpaint",
          "What fills the SAM mask: opencv-telea, lama:<model file>, or an SD inpainting model.",
          choose=_choose_inpainter, choices_help="opencv-telea, lama:<file>, or an SD inpainting model",
          stage="post"),
)
CORE_PARAMS += IMAGE_EDIT_PARAMS

# depth2img (SD 2 depth models): where the depth the redrawn init_image follows comes from.
DEPTH_PARAMS: tuple[Param, ...] = (
    Param("depth_map", "path", None,
          "A depth image (white = near) for a depth2img model to follow instead of estimating one from "
          "init_image; any size, stretched to the image's.", aliases=("depth_image",)),
    Param("depth_model", "model", None,
          "The DPT depth model that estimates depth from init_image: a transformers DPTForDepthEstimation folder "
          "(with its image processor), a depth2img pipeline folder, or a cached id (Intel/dpt-hybrid-midas); "
          "default: the depth2img model's own depth_estimator.", aliases=("depth_estimator",)),
)
CORE_PARAMS += DEPTH_PARAMS

CORE_PARAMS += TECHNIQUE_PARAMS

# Params whose values from the grid params and every axis add up into one list.
ACCUMULATING = frozenset(p.name for p in CORE_PARAMS if p.accumulate)

# A1111 / Infinity Grid parameters gridgen knows by name but no backend implements yet. A spec that
# sets one gets one warning per parameter (an error with --strict) instead of a silent drop.
KNOWN_UNSUPPORTED: dict[str, str] = {
    normalize_key(name): name
    for name in (
        "hypernetwork", "hypernetwork_strength", "restore_faces", "codeformer_weight",
        "face_restoration", "code_former_weight", "enable_hr",
    )
}


def params_of_stage(*stages: str, params: Iterable[Param] = CORE_PARAMS) -> frozenset[str]:
    """The names of the params that the given stages read."""
    return frozenset(param.name for param in params if param.stage in stages)


class Registry:
    """A lookup over a set of `Param`s by any of their spellings."""

    def __init__(self, params: Iterable[Param] = CORE_PARAMS):
        self.params: dict[str, Param] = {}
        self._by_key: dict[str, Param] = {}
        for param in params:
            self.add(param)

    def add(self, param: Param) -> None:
        self.params[param.name] = param
        for spelling in (param.name, *param.aliases):
            self._by_key[normalize_key(spelling)] = param

    def lookup(self, name: Any) -> Param | None:
        return self._by_key.get(normalize_key(name))

    def suggest(self, name: Any) -> str | None:
        """The closest known spelling, for a did-you-mean."""
        matches = difflib.get_close_matches(normalize_key(name), list(self._by_key), n=1, cutoff=0.6)
        return self._by_key[matches[0]].name if matches else None

    def __iter__(self):
        return iter(self.params.values())

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params.values() if p.default is not None}


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def describe_range(param: Param) -> str:
    parts = []
    if param.min is not None:
        parts.append(f">= {_number_text(param.min)}")
    if param.max is not None:
        parts.append(f"<= {_number_text(param.max)}")
    if param.multiple_of:
        parts.append(f"multiple of {param.multiple_of}")
    return ", ".join(parts)


def _as_number(param: Param, value: Any, integer: bool) -> int | float:
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool):
        raise ValueError(f"{param.name} must be {kind}, got {value!r}")
    try:
        number = float(str(value).strip()) if not isinstance(value, int | float) else value
    except ValueError:
        raise ValueError(f"{param.name} must be {kind}, got {value!r}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"{param.name} must be a finite number, got {value!r}")
    if integer:
        if float(number) != int(number):
            raise ValueError(f"{param.name} must be a whole number, got {value!r}")
        number = int(number)
    else:
        number = float(number)
    expected = describe_range(param)
    if param.min is not None and number < param.min or param.max is not None and number > param.max:
        raise ValueError(f"{param.name} must be {expected}, got {value!r}")
    if param.multiple_of and number % param.multiple_of:
        raise ValueError(f"{param.name} must be a multiple of {param.multiple_of}, got {value!r}")
    return number


def coerce(param: Param, value: Any) -> Any:
    """Convert a raw value to `param`'s type; raises ValueError saying what was expected."""
    if param.parse is not None:
        return param.parse(value)
    if param.kind in ("int", "seed"):
        return _as_number(param, value, integer=True)
    if param.kind == "float":
        return _as_number(param, value, integer=False)
    if param.kind == "bool":
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"{param.name} must be true or false, got {value!r}")
    if isinstance(value, dict | list) and not param.accumulate:
        raise ValueError(f"{param.name} must be a single text value, got a {type(value).__name__}")
    if param.kind == "choice":
        chosen = param.choose(str(value)) if param.choose else None
        if chosen is None:
            raise ValueError(f"{param.name} {value!r} is not one of: {param.choices_help}")
        return chosen
    if param.accumulate:
        items = value if isinstance(value, list) else [value]
        check = _check_path if param.kind == "path" else _check_replace
        return [check(param, item) for item in items]
    if param.kind in ("path", "model"):
        return _check_path(param, value)
    return "" if value is None else str(value)


def _check_path(param: Param, value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError(f"{param.name} must name a file, folder or model, got an empty value")
    return text


def _check_replace(param: Param, item: Any) -> str:
    text = str(item)
    if "=" not in text:
        raise ValueError(f"{param.name} must look like `find = replace`, got {text!r}")
    return text


def apply_prompt_replace(prompt: str, rules: Iterable[str]) -> str:
    """Apply `find = replace` rules in order, as the Infinity Grid Generator does."""
    for rule in rules:
        find, replace = (part.strip() for part in rule.split("=", 1))
        prompt = prompt.replace(find, replace)
    return prompt
