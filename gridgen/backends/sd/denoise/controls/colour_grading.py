"""Latent colour grading, as the VectorscopeCC extension does it, per sample in the batch.

At every step the predicted clean latents (x0) are nudged: brightness adds to the luminance direction, contrast
stretches it about its mean, R/G/B shift the colour directions and saturation scales them, each by 1/steps of
the cell's value (saturation by its steps-th root), so the whole run adds up to the value. How much is added is
the value times a `cc_method` source: x0 itself (Straight), the noisy latents (Cross), ones, or noise drawn from
the cell's seed (N.Random normal, U.Random uniform, Multi-Res pyramid noise); `Abs.` takes its absolute value.
`cc_scaling` fades the strength over the steps.

Which latent directions mean what depends on the VAE. SD 1.x/2.x latents: channel 0 is luminance, 1 green,
2 minus red, 3 minus blue; SDXL's: 0 luminance, 1 and 2 minus Cr and minus Cb. A VAE that ships a
`latent_rgb.json` (gridgen-tiny's, from `gridgen.tiny.latent_rgb`) is graded in Y, Cb, Cr read off the latents
by its least-squares latent-to-RGB map, and moved by its RGB-to-latent map, so the same values move brightness
and colour the same way on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gridgen.backends.sd.denoise.controls.guided import StepCounted, alpha_bar_at, to_x0_coefficients
from gridgen.backends.sd.denoise.controls.options import grading_on
from gridgen.backends.sd.denoise.guidance import Guided
from gridgen.backends.sd.denoise.recipe import Recipe

LATENT_RGB_FILE = "latent_rgb.json"
# ITU-R BT.601 RGB to Y, Cb, Cr.
_YCBCR = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                      dtype=torch.float64)


class ColourSpace:
    """How a VAE's latents carry brightness and colour: `family` sd or sdxl (channel meanings), or fitted, where
    Y, Cb, Cr = `read` @ latent + `offset` and a change of them moves the latents by `move` @ change."""

    def __init__(self, family: str, latent_rgb: dict | None = None):
        self.family = family
        if latent_rgb is not None:
            to_rgb, to_latent = latent_rgb["latent_to_rgb"], latent_rgb["rgb_to_latent"]
            self.read = (_YCBCR @ torch.tensor(to_rgb["matrix"], dtype=torch.float64)).float()
            self.offset = (_YCBCR @ torch.tensor(to_rgb["bias"], dtype=torch.float64)).float()
            self.move = (torch.tensor(to_latent["matrix"], dtype=torch.float64) @ torch.linalg.inv(_YCBCR)).float()


def colour_space(vae_folders: Iterable[Path], sdxl: bool) -> ColourSpace:
    """The colour space of the first of `vae_folders` that ships a latent-to-RGB map, else SD's or SDXL's."""
    for folder in vae_folders:
        path = Path(folder) / LATENT_RGB_FILE
        if path.is_file():
            return ColourSpace("fitted", json.loads(path.read_text()))
    return ColourSpace("sdxl" if sdxl else "sd")


def strength(scaling: str, step: int, steps: int) -> float:
    """VectorscopeCC's scaling of the per-step change at `step` of `steps`."""
    angle = step / steps * math.pi / 2
    return {"Flat": 1.0, "Cos": math.cos(angle), "Sin": math.sin(angle), "1 - Cos": 1 - math.cos(angle),
            "1 - Sin": 1 - math.sin(angle)}[scaling]


def cb_cr(r: float, g: float, b: float) -> tuple[float, float]:
    """The extension's RGB shift as a Cb and a Cr shift (for SDXL and fitted latents)."""
    return -0.17 * r - 0.33 * g + 0.5 * b, 0.5 * r - 0.42 * g - 0.08 * b


class ColourGrade(StepCounted):
    """The guidance adjustment grading the rows of a batch of `cells` in the run of `recipe`; `advance` is its
    step hook."""

    def __init__(self, cells: Sequence[dict[str, Any]], recipe: Recipe, space: ColourSpace):
        self.rows = [(row, cell) for row, cell in enumerate(cells) if grading_on(cell)]
        # The random sources draw from the cell's own seed, apart from the recipe's draws.
        self.generators = {row: torch.Generator("cpu").manual_seed(int(cell["seed"])) for row, cell in self.rows}
        self.recipe = recipe
        self.space = space

    def __call__(self, prediction: Guided) -> torch.Tensor:
        out = prediction.guided.clone()
        scheduler = self.recipe.scheduler
        a, b = to_x0_coefficients(scheduler, prediction.t)
        sigma_scale = alpha_bar_at(scheduler, prediction.t) ** -0.5  # the noisy latents as k-diffusion holds them
        for row, cell in self.rows:
            x = prediction.x[row]
            x0 = a * x + b * out[row]
            graded = self.grade(x0, x * sigma_scale, cell, row)
            out[row] = (graded - a * x) / b
        return out

    def source(self, x0: torch.Tensor, noisy: torch.Tensor, method: str, row: int) -> torch.Tensor:
        generator = self.generators[row]

        def drawn(sample) -> torch.Tensor:
            return sample.to(x0.device)

        if method.startswith("Straight"):
            found = x0.clone()
        elif method.startswith("Cross"):
            found = noisy.clone()
        elif method == "Ones":
            found = torch.ones_like(x0)
        elif method == "N.Random":
            found = drawn(torch.randn(x0.shape, generator=generator))
        elif method == "U.Random":
            found = drawn(torch.rand(x0.shape, generator=generator))
        else:
            found = drawn(pyramid_noise(tuple(x0.shape), generator, start=0.0 if "Abs" in method else 1.0))
        return found.abs() if "Abs" in method else found

    def grade(self, x0: torch.Tensor, noisy: torch.Tensor, cell: dict[str, Any], row: int) -> torch.Tensor:
        steps = len(self.recipe.timesteps)
        mod = strength(str(cell["cc_scaling"]), self.step, steps)
        bri, con = (float(cell[name]) / steps * mod for name in ("cc_brightness", "cc_contrast"))
        r, g, b = (float(cell[name]) / steps * mod for name in ("cc_r", "cc_g", "cc_b"))
        sat = (float(cell["cc_saturation"]) ** (1 / steps) - 1) * mod + 1
        method = str(cell["cc_method"])
        target = self.source(x0, noisy, method, row)
        x0 = x0.clone()
        if self.space.family == "sd":
            x0[0] += target[0] * bri
            x0[0] += (x0[0] - x0[0].mean()) * con
            x0[2] -= target[2] * r
            x0[1] += target[1] * g
            x0[3] -= target[3] * b
            x0[1:4] *= sat
            return x0
        cb, cr = cb_cr(r, g, b)
        if self.space.family == "sdxl":
            x0[0] += target[0] * bri
            x0[0] += (x0[0] - x0[0].mean()) * con
            x0[1] -= target[1] * cr
            x0[2] -= target[2] * cb
            x0[1:3] *= sat
            return x0
        return self.grade_fitted(x0, target, method, bri, con, cb, cr, sat)

    def grade_fitted(self, x0, target, method, bri, con, cb, cr, sat) -> torch.Tensor:
        read, move, offset = (m.to(x0.device) for m in (self.space.read, self.space.move, self.space.offset))
        ycc = torch.einsum("ij,jhw->ihw", read, x0) + offset.view(-1, 1, 1)
        if method.startswith(("Straight", "Cross")):  # latents: take their Y, Cb, Cr
            shown = torch.einsum("ij,jhw->ihw", read, target) + offset.view(-1, 1, 1)
            target = shown.abs() if "Abs" in method else shown
        graded = ycc.clone()
        graded[0] += target[0] * bri
        graded[0] += (graded[0] - graded[0].mean()) * con
        graded[1] += target[1] * cb
        graded[2] += target[2] * cr
        graded[1:3] *= sat
        return x0 + torch.einsum("ij,jhw->ihw", move, graded - ycc)


def pyramid_noise(shape: tuple[int, ...], generator: torch.Generator, start: float, iterations: int = 10,
                  discount: float = 0.8) -> torch.Tensor:
    """Multi-resolution noise (kohya's sd-scripts, as VectorscopeCC uses it): normal noise at shrinking random
    sizes, upsampled and summed with falling weights, then scaled to unit spread."""
    channels, height, width = shape
    noise = torch.full(shape, start)
    for level in range(iterations):
        ratio = float(torch.rand((), generator=generator)) * 2 + 2
        low_h, low_w = max(1, int(height / ratio ** level)), max(1, int(width / ratio ** level))
        layer = torch.randn((1, channels, low_h, low_w), generator=generator)
        noise += F.interpolate(layer, size=(height, width), mode="bilinear")[0] * discount ** level
        if low_h == 1 or low_w == 1:
            break
    return noise / noise.std()
