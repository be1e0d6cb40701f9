"""Decodes latents to PIL images and resizes them to the requested output size."""

from __future__ import annotations

import torch
from PIL import Image

from gridgen.backends.sd.images import vae_tiling


def decode(vae, latents: torch.Tensor, tiling: str = "auto") -> list[Image.Image]:
    """Decode a batch of latents with `vae` into RGB images, in tiles as `tiling` (a `vae_tiling` value) says."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    pixels = vae_tiling.decode(vae, (latents / vae.config.scaling_factor + shift).to(vae.dtype), tiling)
    pixels = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return [Image.fromarray(row, "RGB") for row in pixels.permute(0, 2, 3, 1).cpu().numpy()]


def output_size(width: int, height: int, out_width: int | None, out_height: int | None) -> tuple[int, int]:
    """The saved image's size: either side alone keeps the aspect ratio."""
    if out_width and out_height:
        return out_width, out_height
    if out_width:
        return out_width, max(1, round(height * out_width / width))
    if out_height:
        return max(1, round(width * out_height / height)), out_height
    return width, height


def resize(image: Image.Image, out_width: int | None, out_height: int | None) -> Image.Image:
    size = output_size(image.width, image.height, out_width, out_height)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
