"""img2img on latents: noise a start image part-way up the schedule and denoise it back down.

`strength` (A1111's denoising strength) is the part of a `steps`-step schedule that is rerun:
0 keeps the start image, 1 starts from pure noise and keeps only what the conditioning says. This
is what hires fix, SD upscale and an `init_image` img2img all are; each cell's randomness comes
from its own generator, so a cell renders the same alone or in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gridgen.backends.sd.denoise.guidance import Denoiser
from gridgen.backends.sd.denoise.recipe import Recipe
from gridgen.backends.sd.images import vae_tiling


def encode(vae, pixels: torch.Tensor, generators: Sequence[torch.Generator], tiling: str = "auto") -> torch.Tensor:
    """Latents of (N, 3, H, W) `pixels` in [-1, 1]: a draw from the VAE's posterior per row, with its generator;
    encoded in tiles as `tiling` (a `vae_tiling` value) says."""
    rows = []
    for row, generator in zip(pixels, generators, strict=True):
        posterior = vae_tiling.encode(vae, row[None].to(device=vae.device, dtype=vae.dtype), tiling)
        sample = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32)
        rows.append(posterior.mean.float() + posterior.std.float() * sample.to(posterior.mean.device))
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (torch.cat(rows) - shift) * vae.config.scaling_factor


def img2img(recipe: Recipe, denoise: Denoiser, start: torch.Tensor, steps: int, strength: float) -> torch.Tensor:
    """Denoised latents from the (N, C, h, w) `start` latents; the recipe's generators supply the added and step
    noise."""
    if len(recipe.partial_schedule(steps, strength)) == 0:
        return start
    return recipe.run(denoise, recipe.noised(start, recipe.start_noise(start.shape[1:])))


def masked_content(start: torch.Tensor, area: torch.Tensor, fills: Sequence[str],
                   generators: Sequence[torch.Generator]) -> torch.Tensor:
    """A1111's masked content in latent space, over (N, 1, h, w) `area` (weights in [0, 1]): `latent_noise`
    starts it from fresh noise of the cell's generator, `latent_nothing` from zeros; other fills (`original`, and
    `fill`, done on the pixels) keep the encoded image."""
    start = start.clone()
    for row, (fill, generator) in enumerate(zip(fills, generators, strict=True)):
        if fill in ("latent_noise", "latent_nothing"):
            content = torch.zeros_like(start[row])
            if fill == "latent_noise":
                content = torch.randn(start.shape[1:], generator=generator, dtype=torch.float32).to(start.device)
            start[row] = start[row] * (1 - area[row]) + content * area[row]
    return start
