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

`cc_alt` (the extension's "Alt.") grades the latents themselves after each step instead of x0, in the
noise-level-scaled form k-diffusion's samplers hold them (x0 plus sigma times noise), as the extension's callback
does: every step's change is carried by all later steps, so the effect is stronger; Cross then takes x0 as its
source. An HDR bracket (`hdr.brackets`) adds its exposure the same way, with the Ones source and `1 - Cos`
scaling, on top of the cell's own grading, so the bracket at exposure 0 is the cell's own render.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gridgen.backends.sd.denoise.controls.guided import StepCounted, alpha_bar_at, to_x0_coefficients
from gridgen.backends.sd.denoise.controls.options import EXPOSURE, alt_on, grading_on
from gridgen.backends.sd.denoise.guidance import Guided
from gridgen.backends.sd.denoise.recipe import Recipe, Step

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


@dataclass(frozen=True)
class Shifts:
    """One step's changes: brightness, contrast and R, G, B added, saturation a factor."""

    brightness: float = 0.0
    contrast: float = 0.0
    r: float = 0.0
    g: float = 0.0
    b: float = 0.0
    saturation: float = 1.0


def cell_shifts(cell: dict[str, Any], step: int, steps: int) -> Shifts:
    """The cell's grading at `step` of `steps`: 1/steps of each value (saturation its steps-th root), scaled."""
    mod = strength(str(cell["cc_scaling"]), step, steps)
    bri, con, r, g, b = (float(cell[name]) / steps * mod for name in ("cc_brightness", "cc_contrast", "cc_r",
                                                                       "cc_g", "cc_b"))
    return Shifts(bri, con, r, g, b, (float(cell["cc_saturation"]) ** (1 / steps) - 1) * mod + 1)


def exposure_shifts(exposure: float, step: int, steps: int) -> Shifts:
    """An HDR bracket's brightness at `step` of `steps`, as the extension's HDR script grades its brackets."""
    return Shifts(brightness=exposure / steps * strength("1 - Cos", step, steps))


class ColourGrade(StepCounted):
    """The grading of the rows of a batch of `cells` in the run of `recipe`: as a guidance adjustment (`__call__`)
    on x0 for rows in the default mode, and as a step hook (`on_latents`) for `cc_alt` rows and HDR brackets
    (a row's `EXPOSURE` entry); `advance` is the adjustment's step counter."""

    def __init__(self, cells: Sequence[dict[str, Any]], recipe: Recipe, space: ColourSpace):
        graded = [(row, cell) for row, cell in enumerate(cells) if grading_on(cell)]
        self.x0_rows = [(row, cell) for row, cell in graded if not alt_on(cell)]
        self.latent_rows = [(row, cell) for row, cell in graded if alt_on(cell)]
        self.exposures = [(row, float(cell[EXPOSURE])) for row, cell in enumerate(cells) if cell.get(EXPOSURE)]
        # Alt. rows with a Cross source grade the latents by x0, which only the guidance sees.
        self.x0_wanted = {row for row, cell in self.latent_rows if str(cell["cc_method"]).startswith("Cross")}
        self.x0: dict[int, torch.Tensor] = {}
        # The random sources draw from the cell's own seed, apart from the recipe's draws.
        self.generators = {row: torch.Generator("cpu").manual_seed(int(cell["seed"])) for row, cell in graded}
        self.recipe = recipe
        self.space = space

    @property
    def adjusts(self) -> bool:
        """Whether any row needs the guidance adjustment (grading x0, or keeping it for an Alt. Cross source)."""
        return bool(self.x0_rows or self.x0_wanted)

    def __call__(self, prediction: Guided) -> torch.Tensor:
        out = prediction.guided.clone()
        scheduler = self.recipe.scheduler
        a, b = to_x0_coefficients(scheduler, prediction.t)
        sigma_scale = alpha_bar_at(scheduler, prediction.t) ** -0.5  # the noisy latents as k-diffusion holds them
        for row in self.x0_wanted:
            self.x0[row] = a * prediction.x[row] + b * out[row]
        for row, cell in self.x0_rows:
            x = prediction.x[row]
            graded = self.grade(a * x + b * out[row], x * sigma_scale, cell, row)
            out[row] = (graded - a * x) / b
        return out

    def grade(self, x0: torch.Tensor, noisy: torch.Tensor, cell: dict[str, Any], row: int) -> torch.Tensor:
        """One row's x0 graded at the current step, `noisy` being its latents in k-diffusion's form."""
        method = str(cell["cc_method"])
        target = self.source(x0, noisy, method, row)
        return self.apply(x0, target, method, cell_shifts(cell, self.step, len(self.recipe.timesteps)))

    def on_latents(self, step: Step) -> torch.Tensor:
        """The step hook: grade the Alt. rows' latents and add the brackets' exposures, in k-diffusion's form."""
        latents = step.latents
        steps = len(self.recipe.timesteps)
        scale = self.latent_scale(step.index)
        for row, cell in self.latent_rows:
            x = latents[row] / scale
            method = str(cell["cc_method"])
            target = self.source(x, self.x0.get(row, x), method, row)
            latents[row] = self.apply(x, target, method, cell_shifts(cell, step.index, steps)) * scale
        for row, exposure in self.exposures:
            x = latents[row] / scale
            latents[row] = self.apply(x, torch.ones_like(x), "Ones", exposure_shifts(exposure, step.index, steps)) \
                * scale
        return latents

    def latent_scale(self, index: int) -> float:
        """What the scheduler's latents after step `index` are, as a multiple of k-diffusion's x0 + sigma * noise:
        1 for schedulers that hold them so (their first noise level is above 1), else the signal scale."""
        scheduler, timesteps = self.recipe.scheduler, self.recipe.timesteps
        if float(scheduler.init_noise_sigma) > 1 or index + 1 >= len(timesteps):
            return 1.0
        return alpha_bar_at(scheduler, timesteps[index + 1]) ** 0.5

    def source(self, own: torch.Tensor, other: torch.Tensor, method: str, row: int) -> torch.Tensor:
        """What the change is proportional to: the graded tensor itself (Straight), the other of x0 and the
        noisy latents (Cross), ones or noise from the row's seed; Abs. takes its magnitude."""
        generator = self.generators.get(row)

        def drawn(sample) -> torch.Tensor:
            return sample.to(own.device)

        if method.startswith("Straight"):
            found = own.clone()
        elif method.startswith("Cross"):
            found = other.clone()
        elif method == "Ones":
            found = torch.ones_like(own)
        elif method == "N.Random":
            found = drawn(torch.randn(own.shape, generator=generator))
        elif method == "U.Random":
            found = drawn(torch.rand(own.shape, generator=generator))
        else:
            found = drawn(pyramid_noise(tuple(own.shape), generator, start=0.0 if "Abs" in method else 1.0))
        return found.abs() if "Abs" in method else found

    def apply(self, x: torch.Tensor, target: torch.Tensor, method: str, shifts: Shifts) -> torch.Tensor:
        """`x` (channels, height, width) graded by one step's `shifts` in proportion to `target`."""
        bri, con, r, g, b, sat = (shifts.brightness, shifts.contrast, shifts.r, shifts.g, shifts.b,
                                  shifts.saturation)
        x = x.clone()
        if self.space.family == "sd":
            x[0] += target[0] * bri
            x[0] += (x[0] - x[0].mean()) * con
            x[2] -= target[2] * r
            x[1] += target[1] * g
            x[3] -= target[3] * b
            x[1:4] *= sat
            return x
        cb, cr = cb_cr(r, g, b)
        if self.space.family == "sdxl":
            x[0] += target[0] * bri
            x[0] += (x[0] - x[0].mean()) * con
            x[1] -= target[1] * cr
            x[2] -= target[2] * cb
            x[1:3] *= sat
            return x
        return self.grade_fitted(x, target, method, bri, con, cb, cr, sat)

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
