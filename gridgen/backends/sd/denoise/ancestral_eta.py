"""A1111's eta for the ancestral samplers, which diffusers' ancestral schedulers do not take.

An ancestral step from noise level sigma to sigma_next goes down to sigma_down deterministically and adds fresh
noise of sigma_up; k-diffusion (and so A1111) scales the fresh noise by eta:

    sigma_up = min(sigma_next, eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))
    sigma_down = sqrt(sigma_next^2 - sigma_up^2)

eta 1 is diffusers' own step (A1111's default for these samplers), eta 0 a deterministic Euler/DPM2 step.
This module owns a subclass of each ancestral scheduler (`sampler_options.ANCESTRAL_ETA` names them without
importing torch) that reads per-row etas (`etas`), and `with_etas`, which the denoising recipe calls once: a batch
in which no cell sets eta keeps diffusers' own scheduler, so its images do not change.

- Euler a takes its eta per row: each row's sigma_up and sigma_down are its own, its timesteps are shared.
- DPM2 a (and DPM2 a Karras) evaluates the model at a midpoint between sigma and sigma_down, so eta moves the
  timesteps of the whole batch: its eta is one per batch (part of the batch key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import EulerAncestralDiscreteScheduler, KDPM2AncestralDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

ANCESTRAL_DEFAULT_ETA = 1.0


def ancestral_sigmas(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_down, sigma_up) of an ancestral step from `sigma` to `sigma_next` with `eta` (broadcast together)."""
    full_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    sigma_up = torch.minimum(sigma_next, eta * full_up)
    return (sigma_next**2 - sigma_up**2) ** 0.5, sigma_up


class EtaEulerAncestralDiscreteScheduler(EulerAncestralDiscreteScheduler):
    """Euler a with A1111's eta per row (`etas`, one per row of the batch)."""

    etas: torch.Tensor | None = None

    def step(self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor,
             generator: torch.Generator | list[torch.Generator] | None = None, return_dict: bool = True):
        if self.etas is None:
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        # The same float32 arithmetic as the parent's step, so a row with eta 1 steps exactly as it would there.
        sample = sample.to(torch.float32)
        predicted = _predicted_original(self.config.prediction_type, model_output, sample, sigma)
        sigma_down, sigma_up = (part.view(-1, 1, 1, 1).to(sample.device)
                                for part in ancestral_sigmas(sigma, sigma_next, self.etas))
        prev_sample = sample + (sample - predicted) / sigma * (sigma_down - sigma)
        noise = randn_tensor(model_output.shape, dtype=model_output.dtype, device=model_output.device,
                             generator=generator)
        prev_sample = (prev_sample + noise * sigma_up).to(model_output.dtype)
        self._step_index += 1
        return SchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample, predicted)


class EtaKDPM2AncestralDiscreteScheduler(KDPM2AncestralDiscreteScheduler):
    """DPM2 a with A1111's eta, one for the batch (`etas`, all equal): its midpoint timesteps depend on it."""

    etas: torch.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None,
                      num_train_timesteps: int | None = None) -> None:
        super().set_timesteps(num_inference_steps, device=device, num_train_timesteps=num_train_timesteps)
        if self.etas is None:
            return
        # The parent interleaves each level twice (first and second order); take every level once.
        sigmas = torch.cat([self.sigmas[:1], self.sigmas[1:-1:2]]).to(torch.float32)
        sigmas_next = torch.cat([sigmas[1:], sigmas.new_zeros(1)])
        sigmas_down, sigmas_up = ancestral_sigmas(sigmas, sigmas_next, self.etas[0].to(sigmas))
        sigmas_down[-1] = 0.0
        sigmas_interpol = sigmas.log().lerp(sigmas_down.log(), 0.5).exp()
        sigmas_interpol[-2:] = 0.0
        on = self.sigmas_up.device
        self.sigmas_up, self.sigmas_down, self.sigmas_interpol = (
            torch.cat([levels[:1], levels[1:].repeat_interleave(2), levels[-1:]]).to(on)
            for levels in (sigmas_up, sigmas_down, sigmas_interpol))
        log_sigmas = self.log_sigmas.cpu().numpy()
        midpoints = np.array([self._sigma_to_t(level, log_sigmas) for level in sigmas_interpol[:-2].numpy()])
        self.timesteps[1::2] = torch.from_numpy(midpoints).to(self.timesteps)


VARIANTS = {parent.__name__: variant for parent, variant in (
    (EulerAncestralDiscreteScheduler, EtaEulerAncestralDiscreteScheduler),
    (KDPM2AncestralDiscreteScheduler, EtaKDPM2AncestralDiscreteScheduler))}


def _predicted_original(prediction_type: str, model_output: torch.Tensor, sample: torch.Tensor,
                        sigma: torch.Tensor) -> torch.Tensor:
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
    raise ValueError(f"ancestral eta needs an epsilon or v_prediction model, not {prediction_type!r}")


def with_etas(scheduler, cells: Sequence[dict[str, Any]]):
    """`scheduler`, or its eta variant carrying the cells' etas (A1111's default 1 where a cell sets none) when
    any cell sets one and the scheduler is ancestral."""
    variant = VARIANTS.get(type(scheduler).__name__)
    if variant is None or all(cell.get("eta") is None for cell in cells):
        return scheduler
    scheduler = variant.from_config(scheduler.config)
    scheduler.etas = torch.tensor([ANCESTRAL_DEFAULT_ETA if cell.get("eta") is None else float(cell["eta"])
                                   for cell in cells], dtype=torch.float32)
    return scheduler
