"""The SD x4 upscaler as a model kind: a `model` whose UNet has 7 input channels renders its init_image
upscaled under the cell's prompt, as diffusers' `StableDiffusionUpscalePipeline` does.

This module owns such a cell's checks, its size, the params it reads, and its batch's low-resolution
images; the denoising loop is `stages.x4.denoise`, the one the upscale stage runs too. `noise_level` (the
noise added to the low-res image, which is also the UNet's class label) is a param of the base
image here, up to the model's `max_noise_level`. `denoise` does not apply, since nothing starts from
the image's latents: it is read as full strength, so cells that differ only there share a batch and
an image. A `mask`, a SAM edit and the upscalers that redraw with the cell's model as img2img are
refused: the model redraws the whole image, and only as an upscale.

Sizes: the latents are as large as the low-res image and the VAE decodes them `factor` (4) times
larger. Without width/height the low-res image is the init image, each side rounded down to a
multiple of the factor as diffusers' image processor does. width/height, when given, are the output
size: the init image is first resized (bicubic, as diffusers resizes) to 1/factor of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.images.inputs import ImageInputs
from gridgen.backends.sd.kinds.base import Batch, Kind, unchanged
from gridgen.backends.sd.models.locate import ModelInfo
from gridgen.backends.sd.stages import x4
from gridgen.backends.sd.stages.upscalers import cell_upscaler
from gridgen.errors import ModelError

if TYPE_CHECKING:
    import torch


CHANNELS = x4.X4_IN_CHANNELS
FULL_STRENGTH = 1.0
# Upscalers that rerun the cell's own model as img2img, which an x4 UNet does not do.
_REDRAWING_UPSCALERS = ("latent", "hires", "sd-upscale", "demofusion")


def output_size(params: dict[str, Any], inputs: ImageInputs, factor: int) -> tuple[int, int] | None:
    """The size an x4 cell renders at: width/height, or `factor` times its init image (sides rounded down to a
    multiple of `factor`); None when neither is known (validation reports the missing image)."""
    if params.get("width") and params.get("height"):
        return int(params["width"]), int(params["height"])
    found = inputs.size(params["init_image"]) if params.get("init_image") else None
    if found is None:
        return None
    return tuple(max(factor, side - side % factor) * factor for side in found)


def problems(params: dict[str, Any], info: ModelInfo) -> list[ParamProblem]:
    """An x4 cell's missing or misplaced inputs, a size it cannot render, and a noise_level over its model's."""
    model = params["model"]
    described = f"model {model!r} is an x4 upscaler (a {CHANNELS}-channel UNet)"
    found = []
    if not params.get("init_image"):
        found.append(ParamProblem("init_image", f"{described}: it upscales an image 4x, so set init_image to the "
                                                f"image to upscale, or use a txt2img model"))
    if params.get("mask"):
        found.append(ParamProblem("mask", f"mask is set, but {described}, which redraws the whole init_image; "
                                          f"drop mask, or use an inpainting model"))
    if params.get("sam_prompt"):
        found.append(ParamProblem("sam_prompt", f"sam_prompt is set, but {described} and cannot inpaint what SAM "
                                                f"finds; drop sam_prompt, or run the SAM edit on another model"))
    try:
        upscaler = cell_upscaler(params)
    except ValueError:
        upscaler = None  # the upscale stage reports the value
    if upscaler is not None and upscaler.family in _REDRAWING_UPSCALERS:
        found.append(ParamProblem("upscaler", f"upscaler {upscaler.text} redraws with the cell's model as img2img, "
                                              f"which {described} cannot do; pick a resampling or model upscaler"))
    step = info.vae_factor * info.vae_factor
    for side in ("width", "height"):
        value = params.get(side)
        if value is not None and int(value) % step:
            found.append(ParamProblem(side, f"{side} {value}: on x4 upscaler {model!r} width and height are the "
                                            f"output size, {info.vae_factor}x the low-res image, whose sides must "
                                            f"be multiples of {info.vae_factor}; use a multiple of {step}, or drop "
                                            f"width and height to upscale init_image as it is"))
    try:
        limit = x4.read_x4_info(info.config, f"model {model!r}", f"a 7-channel model renders as an x4 upscaler "
                                                                 f"from a {x4.X4_PIPELINE} folder (or an SD 2 "
                                                                 f"x4 upscaler single file)").max_noise_level
    except ModelError as exc:
        return [*found, ParamProblem("model", str(exc))]
    level = int(params["noise_level"])
    if level > limit:
        found.append(ParamProblem("noise_level", f"noise_level {level} is over the maximum of x4 upscaler {model!r} "
                                                 f"({limit}, its max_noise_level); use 0 to {limit}"))
    return found


def low_res_pixels(batch: Sequence[dict[str, Any]], inputs: ImageInputs, size: tuple[int, int],
                   device: torch.device) -> torch.Tensor:
    """(N, 3, h, w) in [-1, 1]: each cell's init image at the low-res `size`."""
    import torch

    from gridgen.backends.sd.images.resample import to_tensor

    rows = []
    for params in batch:
        image = inputs.load("init_image", params["init_image"])
        if image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        rows.append(to_tensor(image, device) * 2 - 1)
    return torch.cat(rows)


class X4Upscaler(Kind):
    name = "x4-upscaler"
    base_reads = frozenset({"noise_level"})

    def problems(self, params, info, services):
        return problems(params, info)

    def as_read(self, params):
        """Whatever `denoise` says, the image is redrawn whole."""
        return params if params.get("denoise") is None else {**params, "denoise": FULL_STRENGTH}

    def size(self, params, info, inputs):
        if info is None:
            return None
        return output_size(params, inputs, info.vae_factor) or (info.native_size,) * 2

    def denoise(self, batch: Batch):
        """The low-res images at 1/factor of the output size, redrawn by `x4.denoise`, the upscale stage's loop."""
        import torch

        width, height = batch.size
        pixels = low_res_pixels(batch.cells, batch.inputs, (width // batch.factor, height // batch.factor),
                                torch.device("cpu"))
        latents = x4.denoise(batch.parts, x4.load_low_res_scheduler(batch.info.config), pixels,
                             [int(p["noise_level"]) for p in batch.cells], batch.recipe, batch.guide, batch.steps)
        return latents, [unchanged] * len(batch.cells)


KIND = X4Upscaler()
