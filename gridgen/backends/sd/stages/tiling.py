"""Tiled inference: run an image-to-image function tile by tile and blend the seams.

Tiles overlap by `overlap` input pixels. Each output tile is weighted by a ramp that rises from
near zero at an edge shared with a neighbour to one at `overlap` pixels in, and is flat at the
image border, so across each overlap the two neighbours cross-fade and no seam shows. Memory is
bounded by one tile, whatever the image size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one side: tiles of `tile` pixels, consecutive ones sharing `overlap`."""
    if tile <= 0 or tile >= size:
        return [0]
    step = tile - overlap
    if step <= 0:
        raise ValueError(f"tile_overlap {overlap} must be smaller than tile_size {tile}")
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def _ramp(length: int, fade: int, rise: bool, fall: bool, device: torch.device) -> torch.Tensor:
    weight = torch.ones(length, device=device)
    if fade <= 0:
        return weight
    ramp = (torch.arange(min(fade, length), device=device, dtype=torch.float32) + 0.5) / fade
    if rise:
        weight[:ramp.numel()] = torch.minimum(weight[:ramp.numel()], ramp)
    if fall:
        weight[length - ramp.numel():] = torch.minimum(weight[length - ramp.numel():], ramp.flip(0))
    return weight


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: int, tile: int,
          overlap: int) -> torch.Tensor:
    """`fn(image)` for a (N, C, H, W) `image` and an `fn` that enlarges by `scale`, computed tile by tile.

    The result is accumulated in fp32 on the image's device whatever `fn` returns.
    """
    _, _, height, width = image.shape
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return fn(image).float()
    total = None
    weights = torch.zeros((1, 1, height * scale, width * scale), device=image.device)
    tile_h, tile_w = min(tile, height), min(tile, width)
    for y in ys:
        for x in xs:
            out = fn(image[:, :, y:y + tile_h, x:x + tile_w]).float()
            if total is None:
                total = torch.zeros((*out.shape[:2], height * scale, width * scale), device=image.device)
            fade = overlap * scale
            wy = _ramp(out.shape[2], fade, rise=y > 0, fall=y + tile_h < height, device=image.device)
            wx = _ramp(out.shape[3], fade, rise=x > 0, fall=x + tile_w < width, device=image.device)
            weight = (wy[:, None] * wx[None, :])[None, None]
            rows = slice(y * scale, y * scale + out.shape[2])
            cols = slice(x * scale, x * scale + out.shape[3])
            total[:, :, rows, cols] += out.to(image.device) * weight
            weights[:, :, rows, cols] += weight
    return total / weights
