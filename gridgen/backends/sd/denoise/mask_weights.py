"""A1111's inpainting conditioning mask strength (`image_mask_weight`): the image an inpainting UNet reads beside
its latents, with the masked part hidden by each cell's own weight.

A1111 blends the init image towards its masked version: 1 (the default, diffusers' inpainting pipeline) hides the
masked part completely, 0 hands the UNet the whole image, so an inpainting model used for img2img keeps more of
the original's composition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def conditioning_image(pixels: torch.Tensor, masks: torch.Tensor, cells: Sequence[dict[str, Any]]) -> torch.Tensor:
    """(N, 3, H, W) `pixels` in [-1, 1] with their (N, 1, H, W) `masks`' parts hidden by each row's weight (the
    cells' `image_mask_weight`; 1 for rows without cells)."""
    hidden = pixels * (masks < 0.5)
    weights = [float(cell.get("image_mask_weight", 1.0)) for cell in cells] or [1.0] * len(pixels)
    if all(weight == 1.0 for weight in weights):
        return hidden
    weight = torch.tensor(weights, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1, 1)
    return torch.lerp(pixels, hidden, weight)
