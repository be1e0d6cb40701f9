"""A1111's noise options: variation seeds, seed resizing and the noise-seed delta (ENSD).

`start_noise` is A1111's start noise for one cell: the seed's draw, optionally drawn at another size and pasted
centred (`seed_resize_from_w/h`), blended towards the variation seed's by spherical interpolation
(`var_seed_strength`). `step_seed` is the seed a cell's step noise is drawn from. Both keep the defaults a no-op,
so a cell that sets none of them draws exactly what it drew before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def step_seed(params: dict[str, Any]) -> int:
    """The seed of a cell's step noise: its seed plus ENSD, as A1111 seeds the ancestral samplers' noise."""
    return (int(params["seed"]) + int(params.get("eta_noise_seed_delta") or 0)) % 2**64


def start_noise(params: dict[str, Any], shape: Sequence[int], seed_generator: torch.Generator,
                factor: int) -> torch.Tensor:
    """One cell's fp32 start noise of `shape` (C, H, W) on the CPU; `seed_generator` is the cell's own stream, from
    which exactly one draw of `shape` is taken whatever the options, so later draws stay where they were.
    `factor` is the VAE's pixels per latent cell, for the resize sizes given in pixels."""
    noise = torch.randn((1, *shape), generator=seed_generator, dtype=torch.float32)[0]
    resize_w, resize_h = int(params.get("seed_resize_from_w") or 0), int(params.get("seed_resize_from_h") or 0)
    resized = resize_w > 0 and resize_h > 0
    from_shape = (shape[0], resize_h // factor, resize_w // factor) if resized else tuple(shape)
    seed_noise = _fresh(int(params["seed"]), from_shape) if resized else noise
    strength = float(params.get("var_seed_strength") or 0.0)
    if strength and params.get("var_seed") is not None:
        seed_noise = slerp(strength, seed_noise, _fresh(int(params["var_seed"]), from_shape))
    return paste_centred(seed_noise, noise) if resized else seed_noise


def _fresh(seed: int, shape: Sequence[int]) -> torch.Tensor:
    return torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)[0]


def paste_centred(small: torch.Tensor, canvas: torch.Tensor) -> torch.Tensor:
    """`canvas` with `small` laid over its centre, each cropped to the other where it is the larger (A1111's
    seed resize: the noise of the size a seed was found at keeps its place in an image of another size)."""
    out = canvas.clone()
    (_, small_h, small_w), (_, big_h, big_w) = small.shape, canvas.shape
    h, w = min(small_h, big_h), min(small_w, big_w)
    top, left = (big_h - h) // 2, (big_w - w) // 2
    from_top, from_left = (small_h - h) // 2, (small_w - w) // 2
    out[:, top:top + h, left:left + w] = small[:, from_top:from_top + h, from_left:from_left + w]
    return out


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `low` (t = 0) to `high` (t = 1) over axis 1, as A1111 blends variation noise
    (so its variation seeds reproduce); nearly parallel vectors interpolate linearly."""
    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_unit * high_unit).sum(1)
    if dot.mean() > 0.9995:
        return low * (1 - t) + high * t
    omega = torch.acos(dot.clamp(-1, 1))
    sin_omega = torch.sin(omega)
    return ((torch.sin((1 - t) * omega) / sin_omega).unsqueeze(1) * low
            + (torch.sin(t * omega) / sin_omega).unsqueeze(1) * high)
