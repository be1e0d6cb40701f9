"""Token merging (ToMe, the `token_merging_ratio` param) through the `tomesd` package, set as A1111 sets it.

ToMe merges the most similar image tokens before each self-attention of the UNet's full-resolution transformer
blocks and unmerges them after, trading detail for speed. A1111 patches with `use_rand=False` (random merge
destinations would make a cell's image depend on its batch) and merges for self-attention only; so does this.
Each row's tokens are matched within the row, so a cell renders the same alone or in a batch.

The patch belongs to the loaded UNet, shared by every batch, so `use_ratio` sets it for the cells about to run and
removes it when the next cells do not merge. A model without attention at full resolution (SDXL and gridgen-tiny
attend only at lower ones) has nothing to merge and renders unchanged.
"""

from __future__ import annotations

from typing import Any


def ratio_of(params: dict[str, Any]) -> float:
    return float(params.get("token_merging_ratio") or 0.0)


def batch_part(params: dict[str, Any]) -> tuple:
    """Cells with different ratios run in different batches: the patch is the model's, not a row's."""
    ratio = ratio_of(params)
    return (("token_merging_ratio", ratio),) if ratio else ()


def _patched_ratio(unet: Any) -> float:
    info = getattr(unet, "_tome_info", None)  # tomesd's state on a patched model; its hooks go with the patch
    return float(info["args"]["ratio"]) if info and info["hooks"] else 0.0


def use_ratio(unet: Any, ratio: float) -> None:
    """Patch `unet` to merge `ratio` of its full-resolution tokens, or remove the patch when `ratio` is 0."""
    if _patched_ratio(unet) == ratio:
        return
    import tomesd

    if ratio:
        tomesd.apply_patch(unet, ratio=ratio, use_rand=False, merge_attn=True, merge_crossattn=False,
                           merge_mlp=False)  # removes an earlier patch first
    else:
        tomesd.remove_patch(unet)
