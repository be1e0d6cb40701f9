"""Enlarging a decoded image: the target size, pixel resampling, and spandrel upscaler models.

A model runs once at its native factor (tiled, fp16 where it supports it on CUDA) and the rest of
the way to the target size is done by Lanczos resampling, as A1111 does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

from gridgen.backends.sd.denoise.inference import inference_mode

if TYPE_CHECKING:
    import torch

RESAMPLERS: dict[str, Image.Resampling | None] = {
    "none": None,
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def target_size(width: int, height: int, factor: float, up_width: int | None = None,
                up_height: int | None = None) -> tuple[int, int]:
    """The upscaled size: `upscale_width`/`upscale_height` when set (one alone keeps the aspect), else `factor`."""
    if up_width and up_height:
        return int(up_width), int(up_height)
    if up_width:
        return int(up_width), max(1, round(height * up_width / width))
    if up_height:
        return max(1, round(width * up_height / height)), int(up_height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def resample(image: Image.Image, size: tuple[int, int], method: str = "lanczos") -> Image.Image:
    """`image` at `size` with the named resampler; `none` returns it unchanged."""
    filter_ = RESAMPLERS[method]
    if filter_ is None or image.size == tuple(size):
        return image
    return image.resize(size, filter_)


def to_tensor(image: Image.Image, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A (1, 3, H, W) tensor in [0, 1], fp32 unless `dtype` says."""
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)[None].to(device=device, dtype=dtype or torch.float32)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """The first image of a (N, 3, H, W) tensor in [0, 1]."""
    import torch

    array = (tensor[0].float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def model_dtype(model, device: torch.device) -> torch.dtype:
    """fp16 on CUDA for models whose architecture spandrel marks as safe in half precision, else fp32."""
    import torch

    return torch.float16 if device.type == "cuda" and model.supports_half else torch.float32


@inference_mode
def run_model(model, image: Image.Image, device: torch.device, tile: int, overlap: int) -> Image.Image:
    """`image` through a spandrel upscaler at its native factor, `tile` input pixels at a time."""
    from gridgen.backends.sd.stages.tiling import tiled

    dtype = model_dtype(model, device)
    model.to(device=device, dtype=dtype)
    pixels = to_tensor(image, device, dtype)
    return to_image(tiled(model, pixels, model.scale, tile, overlap))


def model_upscale(model, image: Image.Image, size: tuple[int, int], device: torch.device, tile: int,
                  overlap: int) -> Image.Image:
    """`image` enlarged to `size`: the model at its native factor, then Lanczos the rest of the way."""
    return resample(run_model(model, image, device, tile, overlap), size)
