"""Seamless tiling (the `tiling` param): circular padding in every convolution of the UNet and the VAE, as A1111
makes tileable images, so what leaves one edge comes back at the opposite one.

The padding belongs to the loaded model, shared by every batch, so `use_tiling` sets it for the cells about to run
and puts it back when the next cells do not tile; a decode still running on the old padding is waited for first.
"""

from __future__ import annotations

from typing import Any

CIRCULAR, ZEROS = "circular", "zeros"


def batch_part(params: dict[str, Any]) -> tuple:
    """Cells that tile and cells that do not run in different batches: the padding is the model's, not a row's."""
    return ("tiling",) if params.get("tiling") else ()


def use_tiling(parts: Any, tiling: bool, before_change=lambda: None) -> None:
    """Give the convolutions of `parts`' UNet and VAE circular padding when `tiling`, zeros otherwise;
    `before_change` runs first when anything changes (to let a decode on the old padding finish)."""
    import torch

    wanted = CIRCULAR if tiling else ZEROS
    convs = [module for model in (parts.unet, parts.vae) for module in model.modules()
             if isinstance(module, torch.nn.Conv2d) and any(module.padding if isinstance(module.padding, tuple)
                                                            else ())]
    if all(conv.padding_mode == wanted for conv in convs):
        return
    before_change()
    for conv in convs:
        conv.padding_mode = wanted
