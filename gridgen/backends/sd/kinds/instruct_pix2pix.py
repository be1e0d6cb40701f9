"""instruct-pix2pix: an 8-channel UNet that edits `init_image` as the prompt instructs.

It follows diffusers' `StableDiffusionInstructPix2PixPipeline`: the init image's latents (the mode of
the VAE's posterior, not scaled by the VAE's scaling factor, so no random draw) are joined to the
noisy latents as four extra channels; the denoising starts from pure noise at the full schedule
(this mode reads no `denoise`); and three predictions are mixed per sample, text and image, image
only, and neither (zeros in place of the image latents), by `cfg_scale` and `image_cfg_scale`
through `guidance.guided_denoiser`. diffusers skips guidance altogether when cfg_scale <= 1 or
image_cfg_scale < 1; here the formula holds at every scale, so a scale axis changes the image
continuously across those points. SDXL models (diffusers' `StableDiffusionXLInstructPix2PixPipeline`) take
the same path, their added conditioning paired with the text on every prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.kinds import edit
from gridgen.backends.sd.kinds.base import Batch, Kind
from gridgen.backends.sd.stages.upscalers import cell_upscaler

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.denoise.guidance import Guide
    from gridgen.backends.sd.denoise.recipe import Recipe

DEFAULT_IMAGE_CFG_SCALE = 1.5
# The start of the schedule is fixed: a `denoise` param is not read, so it must not tell cells apart.
FULL_STRENGTH = 1.0
# Upscalers that rerun the cell's model as img2img, which an instruct-pix2pix UNet does not do.
_REDRAWING_UPSCALERS = ("latent", "hires", "sd-upscale", "demofusion")


def image_cfg_scale(params: dict[str, Any]) -> float:
    value = params.get("image_cfg_scale")
    return DEFAULT_IMAGE_CFG_SCALE if value is None else float(value)


def problems(params: dict[str, Any], model: str) -> list[ParamProblem]:
    """An instruct-pix2pix cell without the image it edits, or with a mask or an upscaler it cannot serve."""
    found = []
    if not params.get("init_image"):
        found.append(ParamProblem("init_image", f"model {model!r} is an instruct-pix2pix model (an 8-channel UNet): "
                                                f"it edits an image, so give init_image (the image to edit) or use a "
                                                f"txt2img model"))
    if params.get("mask") and not params.get("sam_prompt"):  # with sam_prompt, edit.problems already objects
        found.append(ParamProblem("mask", f"model {model!r} is an instruct-pix2pix model: it edits the whole image "
                                          f"and reads no mask; drop mask, or use an inpainting model to redraw a part"))
    try:
        upscaler = cell_upscaler(params)
    except ValueError:
        return found  # the upscale stage reports it
    if upscaler.family in _REDRAWING_UPSCALERS:
        found.append(ParamProblem("upscaler", f"upscaler {upscaler.text} redraws with the cell's model as img2img, "
                                              f"which instruct-pix2pix model {model!r} cannot do; pick a resampling "
                                              f"or model upscaler (Lanczos, an ESRGAN file, the SD x4 upscaler)"))
    return found


def image_latents(vae, pixels: torch.Tensor, tiling: str = "auto") -> torch.Tensor:
    """The (N, 4, h, w) conditioning latents of (N, 3, H, W) `pixels` in [-1, 1]: the posterior's mode, unscaled;
    encoded in tiles as `tiling` (a `vae_tiling` value) says."""
    import torch

    from gridgen.backends.sd.images import vae_tiling

    rows = [vae_tiling.encode(vae, row[None].to(device=vae.device, dtype=vae.dtype), tiling).mode().float()
            for row in pixels]
    return torch.cat(rows)


def denoise(parts, pixels: torch.Tensor, recipe: Recipe, guide: Guide, image_scales: Sequence[float],
            steps: int) -> torch.Tensor:
    """The batch's denoised latents, edits of `pixels` (one init image per cell, at the batch's size)."""
    import torch

    from gridgen.backends.sd.images import vae_tiling

    condition = image_latents(parts.vae, pixels, vae_tiling.batch_mode(recipe.cells))
    condition = condition.to(device=pixels.device, dtype=parts.unet.dtype)
    recipe.full_schedule(steps)
    latents = recipe.start_from_noise((parts.vae.config.latent_channels, *condition.shape[2:]))
    return recipe.run(guide(image=condition, image_scales=image_scales, image_uncond=torch.zeros_like(condition)),
                      latents)


class InstructPix2Pix(Kind):
    name = "instruct-pix2pix"
    exclusive = frozenset({"image_cfg_scale"})
    guidance_rows = 3  # and the image-only prediction

    def problems(self, params, info, services):
        return problems(params, str(params["model"]))

    def as_read(self, params):
        """The strength is always full, so cells differing only in `denoise` share a batch and a base image."""
        return params if params.get("denoise") is None else {**params, "denoise": FULL_STRENGTH}

    def size(self, params, info, inputs):
        return edit.init_size(params, inputs, info.vae_factor if info else 8)

    def denoise(self, batch: Batch):
        prepared = edit.prepare_cells(batch.cells, batch.inputs, batch.size, batch.parts.device)
        latents = denoise(batch.parts, prepared.pixels, batch.recipe, batch.guide,
                          [image_cfg_scale(p) for p in batch.cells], batch.steps)
        return latents, prepared.finish

    def metadata(self, params):
        """The image guidance it was rendered with, default included."""
        return {"image_cfg_scale": image_cfg_scale(params)}


KIND = InstructPix2Pix()
