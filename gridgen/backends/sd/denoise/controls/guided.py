"""Changes to the guided prediction, per sample: CFG rescale, and the prediction space they work in.

CFG rescale is Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed", section 3.4) as
diffusers' `guidance_rescale` applies it: the guided prediction is scaled to the standard deviation of the
conditional one, then mixed back with the unscaled guided prediction by phi.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gridgen.backends.sd.denoise.guidance import Guided
from gridgen.backends.sd.denoise.recipe import Step


class CfgRescale:
    """`cfg_rescale` per row: 0 leaves a row's guided prediction as it is, 1 takes the rescaled one."""

    def __init__(self, phis: Sequence[float], device: torch.device):
        self.phi = torch.tensor([float(phi) for phi in phis], dtype=torch.float32, device=device).view(-1, 1, 1, 1)

    def __call__(self, prediction: Guided) -> torch.Tensor:
        guided = prediction.guided
        dims = tuple(range(1, guided.ndim))
        rescaled = guided * (prediction.cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        return self.phi * rescaled + (1 - self.phi) * guided


def alpha_bar_at(scheduler, t: torch.Tensor) -> float:
    """The signal fraction (alpha bar) of the scheduler's noise schedule at timestep `t`, which may fall between
    the training timesteps: there it sits on the log-sigma line, as diffusers' `_sigma_to_t` places it."""
    alphas = scheduler.alphas_cumprod.double()
    log_sigmas = (((1 - alphas) / alphas) ** 0.5).log()
    position = float(t)
    low = min(int(position), len(alphas) - 1)
    high = min(low + 1, len(alphas) - 1)
    log_sigma = torch.lerp(log_sigmas[low], log_sigmas[high], position - low)
    return float(1 / (1 + log_sigma.exp() ** 2))


def to_x0_coefficients(scheduler, t: torch.Tensor) -> tuple[float, float]:
    """(a, b) with x0 = a * x + b * output, for the UNet's input `x` at timestep `t` (in its variance-preserving
    form, which every diffusers scheduler's `scale_model_input` gives) and its `output` (epsilon or v)."""
    alpha_bar = alpha_bar_at(scheduler, t)
    if scheduler.config.prediction_type == "v_prediction":
        return alpha_bar ** 0.5, -((1 - alpha_bar) ** 0.5)
    return alpha_bar ** -0.5, -((1 - alpha_bar) / alpha_bar) ** 0.5


class StepCounted:
    """A guidance adjustment that needs to know how far the run is: its `advance` is a recipe hook that records
    the steps done and leaves the latents as they are."""

    step = 0

    def advance(self, step: Step) -> torch.Tensor:
        self.step = step.index + 1
        return step.latents
