"""Differential diffusion (Levin and Fried, 2023): img2img under a per-pixel change map instead of a binary mask.

A change map holds, per pixel, how much may change (0 keeps, 1 redraws fully), and acts as a per-pixel denoising
strength. Step k of an n-step run denoises only the pixels whose change exceeds the threshold 1 - (k + 1) / n;
the others are reset to the original image noised to that step's level, so a pixel of change c joins the
denoising after the first (1 - c) of the run and is drawn to fit what already surrounds it. A map of all ones is
plain img2img; a pixel of change 0 ends as the original's latents.

The hook holds one map row per cell, so cells of a batch keep their own maps. On an inpainting (9-channel) UNet
the extra channels carry the area that may change at all (change > 0) and the image with that area blanked, as
diffusers' inpainting pipeline gives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.denoise.guidance import Guide
    from gridgen.backends.sd.denoise.recipe import Recipe, Step


def threshold(index: int, count: int) -> float:
    """The change a pixel must exceed to be denoised at step `index` of a `count`-step run (0 after the last)."""
    return max(0.0, 1.0 - (index + 1) / count)


class FollowOriginal:
    """The per-step hook: after each step, the pixels not yet free take the original noised to the next step's
    level (the original itself after the last step)."""

    def __init__(self, recipe: Recipe, start: torch.Tensor, noise: torch.Tensor, change: torch.Tensor):
        self.recipe, self.start, self.noise, self.change = recipe, start, noise, change

    def __call__(self, step: Step) -> torch.Tensor:
        count, following = len(self.recipe.timesteps), step.index + 1
        if following >= count:
            known, bar = self.start, 0.0
        else:
            known, bar = self.recipe.noised(self.start, self.noise, following), threshold(following, count)
        free = (self.change > bar).to(step.latents.dtype)
        return free * step.latents + (1 - free) * known


def latent_change(change: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The (N, 1, H, W) pixel change map at latent size: each latent cell the mean of the pixels it covers."""
    import torch.nn.functional as F

    return F.interpolate(change, size=shape, mode="area")


def denoise(parts, pixels: torch.Tensor, change: torch.Tensor, recipe: Recipe, guide: Guide, steps: int,
            strength: float, fills: Sequence[str] | None = None) -> torch.Tensor:
    """The batch's latents redrawn from (N, 3, H, W) `pixels` under (N, 1, H, W) `change` in [0, 1], the run
    covering the last `strength` of `steps`. Draws come in img2img's order (the image's posterior, then the
    noise), then, for a row whose fill (A1111's masked content) is `latent_noise`, fresh latents over its map's
    non-zero part, then the blanked image's posterior for a 9-channel UNet, as diffusers' inpainting pipeline
    draws."""
    import torch

    from gridgen.backends.sd.denoise.img2img import encode, masked_content
    from gridgen.backends.sd.images import vae_tiling
    from gridgen.backends.sd.kinds.channels import CHANNELS

    tiling = vae_tiling.batch_mode(recipe.cells)
    start = encode(parts.vae, pixels, recipe.generators, tiling)
    if len(recipe.partial_schedule(steps, strength)) == 0:
        return start
    noise = recipe.draw(start.shape[1:])
    if fills is not None:  # (a row that draws no fill draws the blanked image's posterior next, as before)
        start = masked_content(start, latent_change((change > 0).float(), start.shape[2:]), fills,
                               recipe.generators)
    small = latent_change(change, start.shape[2:])
    denoiser = guide()
    if parts.unet.config.in_channels == CHANNELS["inpaint"]:
        blanked = encode(parts.vae, pixels * (change <= 0), recipe.generators, tiling)
        denoiser = guide(image=torch.cat([(small > 0).float(), blanked], dim=1).to(parts.unet.dtype))
    return recipe.run(denoiser, recipe.noised(start, noise), hooks=[FollowOriginal(recipe, start, noise, small)])
