"""GroupNorm statistics shared by every tile of a tiled VAE pass, estimated once on a small copy of the whole input.

A VAE's GroupNorm layers normalise each group of channels by its mean and variance over the whole image. Run tile
by tile, each layer sees only its tile's statistics: a tile of flat sky and a tile of foliage are normalised apart,
so flat colours and smooth gradients come out with a different brightness or tint per tile, which the seam
blending smears but does not remove. The tiled VAE of the multidiffusion-upscaler-for-automatic1111 extension
answers this by estimating every GroupNorm's statistics on one pass over the whole input shrunk to a tile's size
(nearest-neighbour, so the values keep their distribution, and re-standardised per channel to the full input's
mean and spread), then normalising every tile with them. That is what `shared_statistics` does.

It never changes the VAE it is given: the VAE is shared with the decode thread. It builds a stand-in whose encoder
or decoder is a structural copy of the original, sharing every weight, with each GroupNorm swapped for a
`RecordedGroupNorm`, and the tiled pass runs on the stand-in; the copy goes when the pass ends.
"""

from __future__ import annotations

import copy
from itertools import chain

import torch
import torch.nn.functional as F
from torch import nn


class RecordedGroupNorm(nn.Module):
    """A GroupNorm that records its input's per-group mean and variance on its first call and normalises every
    later input with those statistics; the affine weights are the original layer's own tensors."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm = norm
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        groups = x.float().reshape(x.shape[0], norm.num_groups, -1)
        if self.mean is None:
            self.var, self.mean = torch.var_mean(groups, dim=-1, keepdim=True, unbiased=False)
        normed = ((groups - self.mean) * torch.rsqrt(self.var + norm.eps)).reshape(x.shape)
        if norm.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            normed = normed * norm.weight.float().reshape(shape) + norm.bias.float().reshape(shape)
        return normed.to(x.dtype)


def _structural_copy(module: nn.Module) -> nn.Module:
    """A copy of `module`'s tree of submodules that shares all its parameters and buffers."""
    shared = {id(tensor): tensor for tensor in chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, shared)


def _with_recorded_norms(module: nn.Module) -> tuple[nn.Module, int]:
    """A structural copy of `module` with every GroupNorm recorded, and how many there are."""
    found = _structural_copy(module)
    count = 0
    for parent in list(found.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, RecordedGroupNorm(child))
                count += 1
    return found, count


def shrunk(values: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, H, W) `values` shrunk by nearest neighbour so the longer side is at most `side`, each channel then
    moved back to the full input's mean and spread (subsampling keeps values but not their exact statistics)."""
    height, width = values.shape[-2:]
    scale = min(1.0, side / max(height, width))
    if scale == 1.0:
        return values
    small = F.interpolate(values.float(), size=(max(1, round(height * scale)), max(1, round(width * scale))),
                          mode="nearest-exact")
    spread, mean = torch.std_mean(values.float(), dim=(0, 2, 3), keepdim=True)
    small_spread, small_mean = torch.std_mean(small, dim=(0, 2, 3), keepdim=True)
    small = (small - small_mean) / small_spread.clamp_min(1e-6) * spread + mean
    return small.clamp(values.min(), values.max()).to(values.dtype)


def shared_statistics(vae, part: str, whole: torch.Tensor, side: int):
    """A stand-in for `vae` whose `part` ("encoder" or "decoder") normalises with statistics recorded on `whole`
    (the full input of the pass: latents for the decoder, pixels for the encoder) shrunk to `side`; `vae` itself
    is returned when that part has no GroupNorm."""
    network, count = _with_recorded_norms(getattr(vae, part))
    if not count:
        return vae
    sample = shrunk(whole, side)
    if part == "decoder" and vae.config.use_post_quant_conv:  # as diffusers' tiled_decode feeds each tile
        sample = vae.post_quant_conv(sample)
    network(sample)  # every RecordedGroupNorm records on this first call
    stand_in = copy.copy(vae)  # its own attribute dict and module table; parameters and the rest are shared
    stand_in._modules = {**vae._modules, part: network}
    return stand_in
