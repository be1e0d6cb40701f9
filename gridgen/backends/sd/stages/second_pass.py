"""Upscalers that redraw with the cell's own model: hires fix (latent or pixel) and A1111's SD upscale.

Hires fix enlarges the base image, then runs img2img over the whole enlarged image at
`hires_denoise` with `hires_steps`. The latent variants enlarge the latents (A1111's Latent modes:
torch interpolation, with or without antialiasing); they start from the VAE encoding of the base
image, so a cached base image is all they need. SD upscale enlarges the pixels and runs img2img
tile by tile (`tile_size`, `tile_overlap`), blending the overlaps, so any size fits in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from gridgen.backends.sd.denoise import multidiffusion, regional_attention
from gridgen.backends.sd.denoise.guidance import Guide, guide_for
from gridgen.backends.sd.denoise.img2img import encode, img2img
from gridgen.backends.sd.denoise.recipe import Recipe, scheduler_for
from gridgen.backends.sd.images import images
from gridgen.backends.sd.images.resample import resample, to_image, to_tensor
from gridgen.backends.sd.stages.tiling import tiled
from gridgen.backends.sd.text.clip_xl import added_pair

# A1111's latent upscale modes: torch interpolation mode and antialiasing.
LATENT_MODES = {
    "latent": ("bilinear", False),
    "latent-antialiased": ("bilinear", True),
    "latent-bicubic": ("bicubic", False),
    "latent-bicubic-antialiased": ("bicubic", True),
    "latent-nearest": ("nearest", False),
    "latent-nearest-exact": ("nearest-exact", False),
}
Enlarge = Callable[[Image.Image, tuple[int, int]], Image.Image]
# A regional cell's guide at a (width, height), and whether it needs the regional attention processors.
RegionalGuidance = Callable[[tuple[int, int]], tuple[Guide, bool]]


def vae_scale(parts) -> int:
    return 2 ** (len(parts.vae.config.block_out_channels) - 1)


def fit_to(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """`size` rounded to the nearest multiples of the VAE's factor (at least one latent cell)."""
    return tuple(max(factor, round(side / factor) * factor) for side in size)


def _recipe(parts, params: dict[str, Any]) -> Recipe:
    """The img2img pass's recipe, from the cell's sampler and seed; its generator draws the start image's latents
    first."""
    return Recipe(scheduler_for(params, parts.scheduler_config), [int(params["seed"])], parts.device, cells=[params])


def _redraw(parts, prompts, params: dict[str, Any], latents: torch.Tensor, recipe: Recipe,
            regional: RegionalGuidance | None = None) -> Image.Image:
    """img2img over `latents` at `hires_denoise` with `hires_steps`, under the cell's own prompt and CFG scale, or,
    given `regional`, its regions' guidance at the redraw's size (a regional cell's hires fix)."""
    factor = vae_scale(parts)
    size = (latents.shape[3] * factor, latents.shape[2] * factor)
    if regional is not None:
        guide, attention = regional(size)
    else:
        skip = int(params["clip_skip"])
        requests = [(str(params["prompt"]), skip)], [(str(params["negative_prompt"]), skip)]
        text = prompts.conditioning(*requests)
        guide = guide_for(parts.unet, text.cond, text.uncond, [float(params["cfg_scale"])],
                          masks=(text.cond_mask, text.uncond_mask), **added_pair(prompts, *requests, *size))
        attention = False
    # Tiled diffusion redraws the enlarged image in native-size windows, as hires fix does in A1111's extension
    # (validation keeps it off regional cells).
    windows = multidiffusion.windows(params, parts.unet.config.sample_size * factor)
    denoise = (multidiffusion.tiled_guide(guide, windows, factor) if windows else guide)()
    steps = int(params["hires_steps"]) or int(params["steps"])
    with regional_attention.installed(parts.unet, attention):
        latents = img2img(recipe, denoise, latents, steps, float(params["hires_denoise"]))
    (image,) = images.decode(parts.vae, latents, str(params["vae_tiling"]))
    return image


@torch.inference_mode()
def latent_hires(parts, prompts, base: Image.Image, mode: str, size: tuple[int, int], params: dict[str, Any],
                 regional: RegionalGuidance | None = None) -> Image.Image:
    """Latent hires fix to `size`: the base image's latents interpolated with a LATENT_MODES `mode`, then img2img."""
    factor = vae_scale(parts)
    width, height = fit_to(size, factor)
    recipe = _recipe(parts, params)
    latents = encode(parts.vae, to_tensor(base, parts.device) * 2 - 1, recipe.generators, str(params["vae_tiling"]))
    interpolation, antialias = LATENT_MODES[mode]
    latents = F.interpolate(latents, size=(height // factor, width // factor), mode=interpolation,
                            antialias=antialias)
    return resample(_redraw(parts, prompts, params, latents, recipe, regional), size)


@torch.inference_mode()
def pixel_hires(parts, prompts, base: Image.Image, enlarge: Enlarge, size: tuple[int, int], params: dict[str, Any],
                regional: RegionalGuidance | None = None) -> Image.Image:
    """Pixel hires fix to `size`: the base image enlarged by `enlarge`, encoded, then img2img."""
    width, height = fit_to(size, vae_scale(parts))
    recipe = _recipe(parts, params)
    pixels = to_tensor(enlarge(base, (width, height)), parts.device) * 2 - 1
    latents = encode(parts.vae, pixels, recipe.generators, str(params["vae_tiling"]))
    return resample(_redraw(parts, prompts, params, latents, recipe, regional), size)


@torch.inference_mode()
def sd_upscale(parts, prompts, base: Image.Image, enlarge: Enlarge, size: tuple[int, int],
               params: dict[str, Any]) -> Image.Image:
    """A1111's SD upscale to `size`: enlarge, then img2img tile by tile with the seams blended."""
    factor = vae_scale(parts)
    width, height = fit_to(size, factor)
    pixels = to_tensor(enlarge(base, (width, height)), parts.device)
    tile = int(params["tile_size"]) // factor * factor
    overlap = int(params["tile_overlap"]) // factor * factor

    def redraw_tile(piece: torch.Tensor) -> torch.Tensor:
        # Every tile starts from the cell's seed, as A1111's script does.
        recipe = _recipe(parts, params)
        latents = encode(parts.vae, piece * 2 - 1, recipe.generators)
        return to_tensor(_redraw(parts, prompts, params, latents, recipe), parts.device)

    return resample(to_image(tiled(redraw_tile, pixels, 1, tile, overlap)), size)
