"""Regional prompting in attention mode: each region's text attended to in the UNet's cross-attention, the outputs
blended by the region weights at the attention layer's resolution (Regional Prompter's attention calculation).

A diffusers attention processor wraps the model's own on every attention module while a batch with attention-calc
cells denoises, and the originals are put back afterwards. The per-row inputs travel in the UNet call's
`cross_attention_kwargs` as `regional`, tensors with a row per UNet batch row (so a call split into slices of its
batch slices them alongside): `weights` (rows, slots, h, w) at the latent size, `contexts` (rows, slots - 1, tokens,
width) and, for padded prompts, `bias` (rows, slots - 1, 1, tokens). Slot 0 is the row's own
`encoder_hidden_states`. A row's output is the sum over its slots of the wrapped processor's output for that slot's
text times the slot's weights, pooled to the layer's token grid; plain rows (every unconditional row, every cell
without attention-calc regions) have weight 1 on slot 0 and 0 elsewhere, so they get their own output exactly and
the other slots are not computed for them. Self-attention passes through untouched.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from gridgen.backends.sd.denoise.regional import Part, Row, weight_maps

# The additive bias diffusers' UNet makes of an encoder attention mask (`(1 - mask) * -10000`).
MASKED = -10000.0


class RegionalAttention:
    """A processor that blends cross-attention over each row's region texts, around the module's own processor."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 regional: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> torch.Tensor:
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if regional is None or encoder_hidden_states is None or hidden_states.ndim != 3:
            return out
        weights = _at_tokens(regional["weights"], hidden_states.shape[1]).to(out.dtype)  # (rows, slots, tokens)
        out = out * weights[:, 0, :, None]
        bias = regional.get("bias")
        for slot in range(1, weights.shape[1]):
            rows = weights[:, slot].abs().amax(-1).nonzero()[:, 0]
            if rows.numel() == 0:
                continue
            part = self.inner(attn, hidden_states[rows], regional["contexts"][rows, slot - 1].to(hidden_states.dtype),
                              None if bias is None else bias[rows, slot - 1].to(hidden_states.dtype),
                              None if temb is None else temb[rows], **kwargs)
            out[rows] += part * weights[rows, slot, :, None]
        return out


def attention_grid(tokens: int, latent: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of an attention layer with `tokens` positions in a UNet over a `latent`-sized input: the
    latent size halved (rounding up, as the UNet's strided convolutions do) until it fits."""
    height, width = latent
    for level in range(12):
        shape = (math.ceil(height / 2 ** level), math.ceil(width / 2 ** level))
        if shape[0] * shape[1] == tokens:
            return shape
    raise ValueError(f"no attention grid of {tokens} positions in a {height}x{width} latent")


def _at_tokens(weights: torch.Tensor, tokens: int) -> torch.Tensor:
    """(rows, slots, h, w) weights at the latent size, averaged onto the grid of an attention layer with `tokens`
    positions."""
    rows, slots, height, width = weights.shape
    shape = attention_grid(tokens, (height, width))
    pooled = F.adaptive_avg_pool2d(weights.reshape(rows * slots, 1, height, width), shape)
    return pooled.reshape(rows, slots, tokens)


def inputs(rows: Sequence[Row], cond: torch.Tensor, uncond: torch.Tensor,
           masks: tuple[torch.Tensor | None, torch.Tensor | None], shape: tuple[int, int], dtype: torch.dtype
           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None:
    """The `regional` inputs of the guidance rows' conditional and unconditional UNet rows, or None when no row
    has attention-calc regions. `cond` and `uncond` (text rows, tokens, width) are every text row's contexts and
    `masks` their token masks, `shape` the latent's (h, w). An unconditional row is split by region only where
    its cell's negative prompt is."""
    if not any(row.attention for row in rows):
        return None
    device = cond.device
    weights = weight_maps([row.parts if row.attention else [Part(row.parts[0].text, None, 1.0)] for row in rows],
                          shape, device)
    slots = weights.shape[1]
    # A row's slots past its own parts have weight 0; their text is the row's own, never attended to.
    index = torch.tensor([[part.text for part in row.parts[1:]] + [row.parts[0].text] * (slots - len(row.parts))
                          if row.attention else [row.parts[0].text] * (slots - 1) for row in rows],
                         dtype=torch.long, device=device)
    conditional = {"weights": weights, "contexts": cond[index]}
    split = torch.tensor([row.split_negative for row in rows], device=device)
    plain = torch.zeros_like(weights)
    plain[:, 0] = 1.0
    unconditional = {"weights": torch.where(split[:, None, None, None], weights, plain), "contexts": uncond[index]}
    for found, mask in zip((conditional, unconditional), masks, strict=True):
        if mask is not None:
            found["bias"] = ((1 - mask[index].to(dtype)) * MASKED).unsqueeze(2)
    return conditional, unconditional


@contextmanager
def installed(unet, active: bool) -> Iterator[None]:
    """`RegionalAttention` around every attention processor of `unet` while `active`; the originals back after."""
    if not active:
        yield
        return
    original = dict(unet.attn_processors)
    unet.set_attn_processor({name: RegionalAttention(processor) for name, processor in original.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(original)
