"""Dynamic thresholding, as the sd-dynamic-thresholding extension defines it, per sample in the batch.

High CFG scales push the guided prediction of the clean image (x0) past the range the VAE decodes well, which
burns the image. Dynamic thresholding guides at the cell's CFG scale but then squeezes the result's spread
back to that of a guided prediction at the lower `mimic_scale`: around each channel's mean (`MEAN`) or zero
(`ZERO`), measuring spread as the largest absolute deviation (`AD`, whose CFG side is the
`threshold_percentile` quantile and is clamped first) or the standard deviation (`STD`), per feature channel or
over all channels at once. Both scales may follow a schedule over the steps, down to their `*_min`, and
`interpolate_phi` mixes the thresholded result with the plain guided one.

It works on x0, as the extension does on k-diffusion's denoised output; the guidance hands it epsilon (or v), so
each row is carried into x0 and back with `guided.to_x0_coefficients`. Rows with `mimic_scale` 0 are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from gridgen.backends.sd.denoise.controls.guided import StepCounted, to_x0_coefficients
from gridgen.backends.sd.denoise.controls.options import dynamic_thresholding_on
from gridgen.backends.sd.denoise.guidance import Guided
from gridgen.backends.sd.denoise.recipe import Recipe


def scheduled(scale: float, mode: str, minimum: float, fraction: float, shape: float) -> float:
    """`scale` at `fraction` (0 to 1) of the run under schedule `mode`, which moves it between `minimum` and
    itself; `shape` is the power of the Power schedules and the repeat count of the repeating ones."""
    span = scale - minimum
    if mode == "Linear Down":
        span *= 1 - fraction
    elif mode == "Half Cosine Down":
        span *= math.cos(fraction)
    elif mode == "Cosine Down":
        span *= math.cos(fraction * math.pi / 2)
    elif mode == "Linear Up":
        span *= fraction
    elif mode == "Half Cosine Up":
        span *= 1 - math.cos(fraction)
    elif mode == "Cosine Up":
        span *= 1 - math.cos(fraction * math.pi / 2)
    elif mode == "Power Up":
        span *= fraction ** shape
    elif mode == "Power Down":
        span *= 1 - fraction ** shape
    elif mode == "Linear Repeating":
        portion = (fraction * shape) % 1
        span *= abs(portion - 0.5) * 2
    elif mode == "Cosine Repeating":
        span *= math.cos(fraction * 2 * math.pi * shape) * 0.5 + 0.5
    elif mode == "Sawtooth":
        span *= (fraction * shape) % 1
    return minimum + span


class DynamicThreshold(StepCounted):
    """The guidance adjustment for a batch's `cells` in the run of `recipe`; `advance` is its step hook, which
    tells it how far the run has come."""

    def __init__(self, cells: Sequence[dict[str, Any]], recipe: Recipe):
        self.cells = [dict(cell) for cell in cells]
        self.on = [dynamic_thresholding_on(cell) for cell in cells]
        self.recipe = recipe

    def __call__(self, prediction: Guided) -> torch.Tensor:
        out = prediction.guided.clone()
        a, b = to_x0_coefficients(self.recipe.scheduler, prediction.t)
        fraction = self.step / max(len(self.recipe.timesteps) - 1, 1)
        for row, (cell, on) in enumerate(zip(self.cells, self.on, strict=True)):
            if not on:
                continue
            x = prediction.x[row]
            uncond, cond = a * x + b * prediction.uncond[row], a * x + b * prediction.cond[row]
            shape = float(cell["sched_val"])
            mimic = scheduled(float(cell["mimic_scale"]), cell["mimic_mode"], float(cell["mimic_scale_min"]),
                              fraction, shape)
            cfg = scheduled(float(prediction.scales[row]), cell["cfg_mode"], float(cell["cfg_scale_min"]),
                            fraction, shape)
            x0 = threshold(uncond, cond, mimic, cfg, cell)
            out[row] = (x0 - a * x) / b
        return out


def threshold(uncond: torch.Tensor, cond: torch.Tensor, mimic: float, cfg: float, cell: dict[str, Any]
              ) -> torch.Tensor:
    """One sample's thresholded x0 from its unconditional and conditional x0 (channels, height, width)."""
    mimic_target = uncond + (cond - uncond) * mimic
    cfg_target = uncond + (cond - uncond) * cfg
    mimic_flat, cfg_flat = mimic_target.flatten(1), cfg_target.flatten(1)
    cfg_means = cfg_flat.mean(dim=1, keepdim=True)
    mimic_centered = mimic_flat - mimic_flat.mean(dim=1, keepdim=True)
    cfg_centered = cfg_flat - cfg_means
    # Per channel, the spread is measured along each channel's pixels; otherwise over the whole sample.
    spread_of = (lambda v: v) if cell["separate_feature_channels"] else (lambda v: v.reshape(1, -1))
    percentile = float(cell["threshold_percentile"]) / 100
    if cell["variability_measure"] == "STD":
        mimic_ref = spread_of(mimic_centered).std(dim=1, keepdim=True)
        cfg_ref = spread_of(cfg_centered).std(dim=1, keepdim=True)
    else:
        mimic_ref = spread_of(mimic_centered).abs().amax(dim=1, keepdim=True)
        cfg_ref = torch.quantile(spread_of(cfg_centered).abs(), percentile, dim=1, keepdim=True)
    if cell["scaling_startpoint"] == "ZERO":
        result = cfg_flat * (mimic_ref / cfg_ref)
    elif cell["variability_measure"] == "STD":
        result = cfg_centered / cfg_ref * mimic_ref + cfg_means
    else:
        ceiling = torch.maximum(mimic_ref, cfg_ref)
        result = cfg_centered.clamp(-ceiling, ceiling) / ceiling * mimic_ref + cfg_means
    phi = float(cell["interpolate_phi"])
    return result.view_as(cfg_target) * phi + cfg_target * (1 - phi)
