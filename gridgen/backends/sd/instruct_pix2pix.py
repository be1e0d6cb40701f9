"""instruct-pix2pix: an 8-channel UNet that edits `init_image` as the prompt instructs.

It follows diffusers' `StableDiffusionInstructPix2PixPipeline`: the init image's latents (the mode of
the VAE's posterior, not scaled by the VAE's scaling factor, so no random draw) are joined to the
noisy latents as four extra channels; the denoising starts from pure noise at the full schedule
(this mode reads no `denoise`); and three predictions are mixed per sample, text and image, image
only, and neither (zeros in place of the image latents), by `cfg_scale` and `image_cfg_scale`
through `sampling.guided_denoiser`. diffusers skips guidance altogether when cfg_scale <= 1 or
image_cfg_scale < 1; here the formula holds at every scale, so a scale axis changes the image
continuously across those points. SDXL models (diffusers' `StableDiffusionXLInstructPix2PixPipeline`) take
the same path, their added conditioning paired with the text on every prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gridgen.backends.sd import sampling
from gridgen.upscalers import parse_upscaler

CHANNELS = 8
DEFAULT_IMAGE_CFG_SCALE = 1.5
# The start of the schedule is fixed: a `denoise` param is not read, so it must not tell cells apart.
FULL_STRENGTH = 1.0
# Upscalers that rerun the cell's model as img2img, which an instruct-pix2pix UNet does not do.
_REDRAWING_UPSCALERS = ("latent", "hires", "sd-upscale")


def image_cfg_scale(params: dict[str, Any]) -> float:
    value = params.get("image_cfg_scale")
    return DEFAULT_IMAGE_CFG_SCALE if value is None else float(value)


def metadata(params: dict[str, Any], in_channels: int) -> dict[str, Any]:
    """What an image records of this mode: the image guidance it was rendered with, default included."""
    return {"image_cfg_scale": image_cfg_scale(params)} if in_channels == CHANNELS else {}


def as_read(params: dict[str, Any], in_channels: int | None) -> dict[str, Any]:
    """The cell's params as its mode reads them: on an instruct-pix2pix model the strength is always full,
    so cells differing only in `denoise` share a batch and a base image."""
    if in_channels != CHANNELS or params.get("denoise") is None:
        return params
    return {**params, "denoise": FULL_STRENGTH}


def problems(params: dict[str, Any], model: str, in_channels: int | None) -> list[tuple[str, str]]:
    """(param, message) for an instruct-pix2pix model without the image it edits, or with a mask or an upscaler
    it cannot serve."""
    if in_channels != CHANNELS:
        return []
    found = []
    if not params.get("init_image"):
        found.append(("init_image", f"model {model!r} is an instruct-pix2pix model (an 8-channel UNet): it edits "
                                    f"an image, so give init_image (the image to edit) or use a txt2img model"))
    if params.get("mask") and not params.get("sam_prompt"):  # with sam_prompt, edit.problems already objects
        found.append(("mask", f"model {model!r} is an instruct-pix2pix model: it edits the whole image and reads "
                              f"no mask; drop mask, or use an inpainting model to redraw a part"))
    try:
        upscaler = parse_upscaler(str(params.get("upscaler") or "none"))
    except ValueError:
        return found  # the upscale stage reports it
    if upscaler.family in _REDRAWING_UPSCALERS:
        found.append(("upscaler", f"upscaler {upscaler.text} redraws with the cell's model as img2img, which "
                                  f"instruct-pix2pix model {model!r} cannot do; pick a resampling or model "
                                  f"upscaler (Lanczos, an ESRGAN file, the SD x4 upscaler)"))
    return found


def image_latents(vae, pixels: torch.Tensor) -> torch.Tensor:
    """The (N, 4, h, w) conditioning latents of (N, 3, H, W) `pixels` in [-1, 1]: the posterior's mode, unscaled."""
    rows = [vae.encode(row[None].to(device=vae.device, dtype=vae.dtype)).latent_dist.mode().float() for row in pixels]
    return torch.cat(rows)


def denoise(parts, pixels: torch.Tensor, scheduler, cond, uncond, scales: Sequence[float],
            image_scales: Sequence[float], steps: int, seeds: Sequence[int], **text: Any) -> torch.Tensor:
    """The batch's denoised latents, edits of `pixels` (one init image per cell, at the batch's size).

    `text` is the rest of the batch's text conditioning for `sampling.guided_denoiser` (token masks,
    SDXL's added conditioning)."""
    device = pixels.device
    condition = image_latents(parts.vae, pixels).to(device=device, dtype=parts.unet.dtype)
    scheduler.set_timesteps(steps, device=device)
    noise, generators = sampling.initial_noise(seeds, (parts.vae.config.latent_channels, *condition.shape[2:]),
                                               device)
    guided = sampling.guided_denoiser(parts.unet, cond, uncond, scales, image=condition, image_scales=image_scales,
                                      image_uncond=torch.zeros_like(condition), **text)
    return sampling.sample(guided, scheduler, noise * scheduler.init_noise_sigma,
                           sampling.step_noise_kwargs(scheduler, seeds, generators))
