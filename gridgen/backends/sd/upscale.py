"""Pixel upscalers: the resampling filters an `upscaler` axis can compare on one base image.

Model-based upscalers (spandrel files, the SD x4 upscaler, hires fix) join this table as stages
of their own; every upscaler here is a pure function of (image, factor).
"""

from __future__ import annotations

from PIL import Image

RESAMPLERS: dict[str, Image.Resampling | None] = {
    "none": None,
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def upscale(image: Image.Image, upscaler: str, factor: float) -> Image.Image:
    """`image` scaled by `factor` with the named resampler; `none` returns it unchanged."""
    method = RESAMPLERS[upscaler]
    if method is None or factor == 1:
        return image
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, method)
