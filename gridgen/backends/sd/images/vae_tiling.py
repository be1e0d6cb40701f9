"""The tiled VAE: encoding and decoding large images tile by tile, with diffusers' own tiling, under `vae_tiling`.

`vae_tiling: on` always tiles, `off` never does, `auto` tiles once an image has more than four tiles' worth of
pixels, so a large result does not need one whole-image VAE pass in memory. diffusers' `AutoencoderKL` tiles
with overlapping tiles whose seams it blends; its tile is the VAE config's `sample_size`, which for small
models is so few latent cells that every tile sees mostly its own border, so the tile here is at least
`MIN_TILE_LATENTS` latent cells on a side. The tiled methods are called directly rather than switched on with
`enable_tiling`, because the VAE is shared by the render thread (encoding) and the decode thread: a mode set on
the module by one cell would leak into the other's pass.

diffusers' tiles each normalise with their own GroupNorm statistics, so flat colours and smooth gradients drift
from tile to tile; here every tile normalises with statistics estimated on the whole input shrunk to
`ESTIMATE_TILES` tiles a side (`tile_norms`), which the pass runs on a stand-in for the VAE, leaving the shared one
untouched. Two tiles a side rather than one because the image's border, where zero padding skews the features,
weighs in the statistics in proportion to 1 / side: at one tile it weighs three times what it does in a 3-tile
image and a flat field comes out worse than per-tile statistics give. Two tiles a side is four tiles' worth of
pixels, which `auto` decodes whole anyway, so the estimate never needs more memory than an untiled pass below
the threshold.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from gridgen.backends.sd.images import tile_norms

MODES = ("auto", "on", "off")
# 32 latent cells = 256 px on an SD VAE: below this a tile's context is mostly padding.
MIN_TILE_LATENTS = 32
OVERLAP = 0.25  # diffusers' default share of a tile that neighbouring tiles blend over
ESTIMATE_TILES = 2  # the side, in tiles, of the shrunk whole input the shared GroupNorm statistics come from


def _factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def tile_pixels(vae) -> int:
    """The side of a tile in image pixels: the VAE's own `sample_size`, at least MIN_TILE_LATENTS latent cells."""
    return max(int(vae.config.sample_size), MIN_TILE_LATENTS * _factor(vae))


def _configure(vae) -> None:
    """Give `vae` the tile size of `tile_pixels` (idempotent: every cell sets the same values)."""
    tile = tile_pixels(vae)
    vae.tile_sample_min_size = tile
    vae.tile_latent_min_size = tile // _factor(vae)
    vae.tile_overlap_factor = OVERLAP


def batch_mode(cells: Sequence[dict[str, Any]]) -> str:
    """The `vae_tiling` of a batch's cells (one value per batch: the backend's batch key holds it); `auto` for a
    batch denoised without its params."""
    return str(cells[0].get("vae_tiling") or "auto") if cells else "auto"


def uses_tiles(vae, mode: str, height: int, width: int) -> bool:
    """Whether an image of `height` x `width` pixels is encoded or decoded in tiles under `mode`."""
    if mode not in MODES:
        raise ValueError(f"vae_tiling {mode!r} is not one of {', '.join(MODES)}")
    if mode == "off" or not hasattr(vae, "tiled_decode"):
        return False
    return mode == "on" or height * width > 4 * tile_pixels(vae) ** 2


def decode(vae, latents: torch.Tensor, mode: str = "auto") -> torch.Tensor:
    """The VAE's decoded pixels (N, 3, H, W) in [-1, 1] of scaled-and-unshifted `latents`, tiled per `mode`."""
    factor = _factor(vae)
    if not uses_tiles(vae, mode, latents.shape[-2] * factor, latents.shape[-1] * factor):
        return vae.decode(latents).sample
    _configure(vae)
    stand_in = tile_norms.shared_statistics(vae, "decoder", latents, ESTIMATE_TILES * vae.tile_latent_min_size)
    return stand_in.tiled_decode(latents).sample


def encode(vae, pixels: torch.Tensor, mode: str = "auto"):
    """The VAE's posterior (a diffusers DiagonalGaussianDistribution) of (N, 3, H, W) `pixels`, tiled per `mode`."""
    if not uses_tiles(vae, mode, pixels.shape[-2], pixels.shape[-1]):
        return vae.encode(pixels).latent_dist
    _configure(vae)
    with warnings.catch_warnings():
        # diffusers announces a change to tiled_encode's return type; the posterior it returns today is what
        # is read here.
        warnings.simplefilter("ignore", FutureWarning)
        stand_in = tile_norms.shared_statistics(vae, "encoder", pixels, ESTIMATE_TILES * vae.tile_sample_min_size)
        return stand_in.tiled_encode(pixels).latent_dist
