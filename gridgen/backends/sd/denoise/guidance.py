"""The guidance wrapper: a UNet plus per-sample conditioning as one function eps(x, t) for the whole batch.

Kept apart from the loop that calls it (`recipe`), as k-diffusion keeps its model wrappers apart from its
samplers: a kind builds its denoiser here from what its UNet reads, and any recipe runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# A batch's cross-attention context: fixed, or computed from the timestep at every step.
Context = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Guided:
    """A step's predictions, for an adjustment of the guided one (CFG rescale, dynamic thresholding): the UNet's
    input `x` at timestep `t`, the unconditional and conditional predictions, the rows' CFG `scales` and the
    `guided` prediction so far."""

    x: torch.Tensor
    t: torch.Tensor
    uncond: torch.Tensor
    cond: torch.Tensor
    scales: torch.Tensor
    guided: torch.Tensor

    def with_guided(self, guided: torch.Tensor) -> Guided:
        return replace(self, guided=guided)


# Rewrites the guided prediction, one row per sample.
Adjust = Callable[[Guided], torch.Tensor]


def guided_denoiser(unet, cond: Context, uncond: Context, scales: Sequence[float],
                    image: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
                    masks: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
                    added_cond: dict[str, torch.Tensor] | None = None,
                    added_uncond: dict[str, torch.Tensor] | None = None,
                    image_scales: Sequence[float] | None = None,
                    image_uncond: torch.Tensor | None = None,
                    uncond_class_labels: torch.Tensor | None = None, adjust: Adjust | None = None,
                    cross_attention: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None) -> Denoiser:
    """eps(x, t) with classifier-free guidance at each sample's own scale.

    `cond` and `uncond` hold one context row per sample: fixed tensors (CLIP), or functions of the
    timestep for conditioning that changes along the trajectory (ELLA's TSC).

    Rows at scale 1 are the conditional prediction exactly, so their unconditional half is never sent
    through the UNet. Every other scale needs both halves: below 1 the formula mixes in the
    unconditional prediction (at 0 it is all there is), as A1111's CFG scale does.
    Latents stay fp32 outside the UNet call whatever its dtype. UNets with extra per-sample inputs
    (the x4 upscaler: its low-resolution `image`, joined to the latents' channels, and its noise level
    as `class_labels`) get them on both halves, unless `uncond_class_labels` gives the unconditional half
    its own (unCLIP zeroes its image embedding there). `masks` (cond, uncond), when rows were padded to one
    length, mark each row's real tokens for cross-attention. `added_cond` / `added_uncond` hold
    per-sample `added_cond_kwargs` rows (SDXL's pooled text and size), paired like `cond` / `uncond`.

    `image_scales` adds guidance by the `image` itself (instruct-pix2pix): a third prediction, with the
    unconditional text and `image_uncond` in place of `image`, and per sample, with text scale g and
    image scale s, eps = g * cond + (s - g) * image-only + (1 - s) * unconditional, which is
    diffusers' uncond + g * (cond - image-only) + s * (image-only - uncond). A prediction whose weight
    is 0 is not computed: the image-only rows run only where s != g, the unconditional ones only where
    s != 1, so s = 1 is plain CFG at the same cost, and without `image_scales` nothing changes.

    `adjust` rewrites plain CFG's guided prediction from both halves (`controls`: CFG rescale, dynamic
    thresholding); rows at scale 1 hand it the conditional prediction as both.

    `cross_attention` (cond, uncond) holds per-sample tensors for the attention processors, paired like `added_cond`
    and handed to the UNet as `cross_attention_kwargs["regional"]` (attention-calc regions, `regional_attention`).
    """
    if image_scales is not None and (image is None or image_uncond is None):
        raise ValueError("image guidance needs `image` and `image_uncond`, its unconditional counterpart")
    device = cond.device if isinstance(cond, torch.Tensor) else unet.device
    pairs = list(zip(scales, image_scales or [1.0] * len(scales), strict=True))

    def samples_where(keep: Callable[[float, float], bool]) -> torch.Tensor:
        return torch.tensor([i for i, (g, s) in enumerate(pairs) if keep(g, s)], dtype=torch.long, device=device)

    # `guided` rows: the unconditional text with `image` (plain CFG's unconditional half, the image-only
    # prediction); `bare` rows: the unconditional text with `image_uncond`. Each only where its weight is not 0.
    guided = samples_where(lambda g, s: s != g)
    bare = samples_where(lambda g, s: s != 1)
    stand_in = samples_where(lambda g, s: s == g != 1)  # the image-only prediction cancels out here
    scale = torch.tensor(list(scales), dtype=torch.float32, device=device)
    scale = scale.view(-1, 1, 1, 1)
    image_weight = torch.tensor([s - 1 for _, s in pairs], dtype=torch.float32, device=device).view(-1, 1, 1, 1)
    fixed = None if callable(cond) or callable(uncond) else torch.cat([cond, uncond[guided], uncond[bare]])
    image_in = None
    if image is not None:
        image_in = torch.cat([image, image[guided], *([image_uncond[bare]] if image_scales is not None else [])])
    extra = {}
    if class_labels is not None:
        unconditional = class_labels if uncond_class_labels is None else uncond_class_labels
        extra["class_labels"] = torch.cat([class_labels, unconditional[guided], unconditional[bare]])
    if masks[0] is not None:
        extra["encoder_attention_mask"] = torch.cat([masks[0], masks[1][guided], masks[1][bare]])
    if added_cond:
        extra["added_cond_kwargs"] = {name: torch.cat([rows, added_uncond[name][guided], added_uncond[name][bare]])
                                      for name, rows in added_cond.items()}
    if cross_attention is not None:
        regional, plain = cross_attention
        extra["cross_attention_kwargs"] = {"regional": {name: torch.cat([rows, plain[name][guided], plain[name][bare]])
                                                        for name, rows in regional.items()}}

    dtype = unet.dtype  # diffusers looks it up over the parameters on every access

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch, split = x.shape[0], x.shape[0] + len(guided)
        if fixed is not None:
            context = fixed
        else:
            unconditional = _at(uncond, t)
            context = torch.cat([_at(cond, t), unconditional[guided], unconditional[bare]])
        x_in = torch.cat([x, x[guided], x[bare]])
        if image_in is not None:
            x_in = torch.cat([x_in, image_in], dim=1)
        eps = unet(x_in.to(dtype), t, encoder_hidden_states=context, **extra).sample.float()
        eps_cond = eps[:batch]
        eps_uncond = eps_cond.clone()
        eps_uncond[guided] = eps[batch:split]
        if image_scales is None:
            guided_eps = eps_uncond + scale * (eps_cond - eps_uncond)
            return guided_eps if adjust is None else adjust(Guided(x, t, eps_uncond, eps_cond, scale, guided_eps))
        # Rows not computed had weight 0; a neighbour stands in for them so that no term needs them.
        eps_bare = eps_uncond.clone()
        eps_bare[bare] = eps[split:]
        eps_uncond[stand_in] = eps_bare[stand_in]
        return eps_uncond + scale * (eps_cond - eps_uncond) + image_weight * (eps_uncond - eps_bare)

    return denoise


def _at(context: Context, t: torch.Tensor) -> torch.Tensor:
    return context(t) if callable(context) else context


# A batch's guidance with its text conditioning in place: called with what the UNet reads besides the latents
# and the text (an image, class labels, image guidance), it gives the batch's denoiser.
Guide = Callable[..., Denoiser]


def guide_for(unet, cond: Context, uncond: Context, scales: Sequence[float], **text: Any) -> Guide:
    """The batch's `Guide`: `guided_denoiser` with the UNet, the text conditioning and the CFG scales bound."""
    return partial(guided_denoiser, unet, cond, uncond, scales, **text)
