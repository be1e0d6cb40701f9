"""What one batch's cells ask of the latent controls: the guidance adjustment and the step hooks of its run.

Every control keeps one value per row, so cells with different controls (or none) share a batch; a batch no
cell of which turns a control on gets neither adjustment nor hooks, and runs as it did without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from gridgen.backends.sd.denoise.controls.colour_grading import ColourGrade, colour_space
from gridgen.backends.sd.denoise.controls.dynamic_threshold import DynamicThreshold
from gridgen.backends.sd.denoise.controls.guided import CfgRescale
from gridgen.backends.sd.denoise.controls.latent_hooks import AntiBurn, Mirror
from gridgen.backends.sd.denoise.controls.options import EXPOSURE, dynamic_thresholding_on, grading_on, mirroring_on
from gridgen.backends.sd.denoise.guidance import Adjust, Guided
from gridgen.backends.sd.denoise.recipe import Recipe, StepHook


class Controls:
    """The controls of a batch of `cells` denoised by `recipe`, on a model whose VAE is the first of
    `vae_folders` (where colour grading looks for a latent-to-RGB map) and is SDXL's when `sdxl`."""

    def __init__(self, cells: Sequence[dict[str, Any]], recipe: Recipe, vae_folders: Iterable[Path] = (),
                 sdxl: bool = False):
        self.adjustments: list[Adjust] = []
        self.hooks: list[StepHook] = []
        if any(dynamic_thresholding_on(cell) for cell in cells):
            threshold = DynamicThreshold(cells, recipe)
            self.adjustments.append(threshold)
            self.hooks.append(threshold.advance)
        if any(float(cell.get("cfg_rescale") or 0) > 0 for cell in cells):
            self.adjustments.append(CfgRescale([float(cell.get("cfg_rescale") or 0) for cell in cells],
                                               recipe.device))
        if any(grading_on(cell) or cell.get(EXPOSURE) for cell in cells):
            grade = ColourGrade(cells, recipe, colour_space(vae_folders, sdxl))
            if grade.adjusts:
                self.adjustments.append(grade)
                self.hooks.append(grade.advance)
            if grade.latent_rows or grade.exposures:
                self.hooks.append(grade.on_latents)
        if any(mirroring_on(cell) for cell in cells):
            self.hooks.append(Mirror(cells, recipe))
        if any(int(cell.get("antiburn_steps") or 1) > 1 for cell in cells):
            self.hooks.append(AntiBurn(cells, recipe))  # last: it averages what the other hooks left

    @property
    def adjust(self) -> Adjust | None:
        """The guided prediction's adjustments, in order (dynamic thresholding, CFG rescale, then
        colour grading), or None."""
        if not self.adjustments:
            return None

        def adjust(prediction: Guided) -> torch.Tensor:
            for step in self.adjustments:
                prediction = prediction.with_guided(step(prediction))
            return prediction.guided

        return adjust
