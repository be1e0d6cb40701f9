"""Step hooks on the latents, per sample: latent mirroring and anti-burn.

Latent mirroring (the Latent Mirroring extension): during the first `mirror_max_step` fraction of the steps,
`Alternate Steps` replaces the latents by their mirror image after every step, so the picture is drawn from
both sides in turn, and `Blend Average` replaces them by the mean of themselves and their mirror image, which
makes them symmetric outright. The later steps run free, so the detail need not be symmetric.

Anti-burn averages the latents of the last `antiburn_steps` steps into the result, smoothing the over-sharpened
noise some samplers leave in their last steps; 1 keeps the last step's latents, the plain result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from gridgen.backends.sd.denoise.controls.options import mirroring_on
from gridgen.backends.sd.denoise.recipe import Recipe, Step

_MIRRORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # Latents are (channels, height, width): a vertical mirror line swaps left and right.
    "Vertical Mirroring": lambda x: torch.flip(x, [-1]),
    "Horizontal Mirroring": lambda x: torch.flip(x, [-2]),
    "Horizontal+Vertical Mirroring": lambda x: torch.flip(x, [-2, -1]),
    "90 Degree Rotation": lambda x: torch.rot90(x, 1, [-2, -1]),
    "180 Degree Rotation": lambda x: torch.rot90(x, 2, [-2, -1]),
}


class Mirror:
    """The mirroring hook for the batch's `cells` over the run of `recipe`."""

    def __init__(self, cells: Sequence[dict[str, Any]], recipe: Recipe):
        self.rows = [(row, cell["mirror_mode"], _MIRRORS[cell["mirror_style"]], float(cell["mirror_max_step"]))
                     for row, cell in enumerate(cells) if mirroring_on(cell)]
        self.recipe = recipe

    def __call__(self, step: Step) -> torch.Tensor:
        latents = step.latents
        for row, mode, mirror, fraction in self.rows:
            if step.index >= len(self.recipe.timesteps) * fraction:
                continue
            if mode == "Alternate Steps":
                latents[row] = mirror(latents[row])
            else:
                latents[row] = (latents[row] + mirror(latents[row])) / 2
        return latents


class AntiBurn:
    """The anti-burn hook: at the run's last step each row becomes the mean of its last N steps' latents."""

    def __init__(self, cells: Sequence[dict[str, Any]], recipe: Recipe):
        self.counts = [int(cell["antiburn_steps"]) for cell in cells]
        self.recipe = recipe
        self.kept: list[torch.Tensor] = []

    def __call__(self, step: Step) -> torch.Tensor:
        self.kept = [*self.kept, step.latents.clone()][-max(self.counts):]
        if step.index != len(self.recipe.timesteps) - 1:
            return step.latents
        latents = step.latents
        for row, count in enumerate(self.counts):
            latents[row] = torch.stack([kept[row] for kept in self.kept[-count:]]).mean(dim=0)
        return latents
