"""A1111's eta for the ancestral samplers, which diffusers' ancestral and SDE schedulers do not take.

An ancestral step from noise level sigma to sigma_next goes down to sigma_down deterministically and adds fresh
noise of sigma_up; k-diffusion (and so A1111) scales the fresh noise by eta:

    sigma_up = min(sigma_next, eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))
    sigma_down = sqrt(sigma_next^2 - sigma_up^2)

DPM++ 2M SDE scales its noise as k-diffusion's sample_dpmpp_2m_sde does: eta times the step's log-SNR change h
goes to noise, the rest to the deterministic DPM-Solver++ update.

eta 1 is diffusers' own step (A1111's default for these samplers); eta 0 the deterministic step of the sampler's
twin (Euler, DPM2, DPM++ 2M). This module owns a subclass of each such scheduler that reads per-row etas (`etas`),
and `with_etas`, which the denoising recipe calls once: a batch in which no cell sets eta keeps diffusers' own
scheduler, so its images do not change. The sampler table's `eta` says how each sampler takes it:

- per row (Euler a, DPM++ SDE, DPM++ 2M SDE): each row's noise and step are its own, the timesteps shared;
- per batch (DPM2 a): the model is evaluated at a midpoint between sigma and sigma_down, so eta moves the
  timesteps of the whole batch (eta is then part of the batch key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
)
from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler
from diffusers.schedulers.scheduling_utils import SchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from gridgen.backends.sd.denoise.samplers import find_sampler

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


class EtaDPMSolverSDEScheduler(DPMSolverSDEScheduler):
    """DPM++ SDE with A1111's eta per row (`etas`): each of its two half steps takes the row's own sigma_up."""

    etas: torch.Tensor | None = None

    def step(self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor,
             return_dict: bool = True, s_noise: float = 1.0):
        if self.etas is None:
            return super().step(model_output, timestep, sample, return_dict=return_dict, s_noise=s_noise)
        if self.step_index is None:
            self._init_step_index(timestep)
        if self.noise_sampler is None:
            positive = self.sigmas[self.sigmas > 0]
            self.noise_sampler = BrownianTreeNoiseSampler(sample, positive.min().item(), self.sigmas.max().item(),
                                                          self.noise_sampler_seed)
        first = self.state_in_first_order
        index = self.step_index if first else self.step_index - 1
        sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
        # Log-sigma time, as the parent steps in it (t = -log sigma).
        t, t_next = -sigma.log(), -sigma_next.log()
        t_mid = t + (t_next - t) * 0.5  # the parent's midpoint, whatever eta: the timesteps stay the batch's
        predicted = _predicted_original(self.config.prediction_type, model_output, sample,
                                        sigma if first else (-t_mid).exp())
        if sigma_next == 0:
            prev_sample = sample + (sample - predicted) / sigma * (sigma_next - sigma)
        else:
            start = sample if first else self.sample
            sigma_from, sigma_to = (-t).exp(), (-(t_mid if first else t_next)).exp()
            sigma_down, sigma_up = (part.view(-1, 1, 1, 1).to(sample.device)
                                    for part in ancestral_sigmas(sigma_from, sigma_to, self.etas))
            t_down = -sigma_down.log()
            prev_sample = ((-t_down).exp() / sigma_from) * start - (t - t_down).expm1() * predicted
            prev_sample = prev_sample + self.noise_sampler(sigma_from, sigma_to) * s_noise * sigma_up
            self.sample, self.mid_point_sigma = (start, sigma_to) if first else (None, None)
        self._step_index += 1
        return SchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample, predicted)


class EtaDPMSolverMultistepScheduler(DPMSolverMultistepScheduler):
    """DPM++ 2M SDE with A1111's eta per row (`etas`), as k-diffusion's sample_dpmpp_2m_sde scales its noise; the
    other DPM-Solver algorithms are the parent's."""

    etas: torch.Tensor | None = None

    def dpm_solver_first_order_update(self, model_output: torch.Tensor, *args, sample: torch.Tensor | None = None,
                                      noise: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if self.etas is None or self.config.algorithm_type != "sde-dpmsolver++":
            return super().dpm_solver_first_order_update(model_output, *args, sample=sample, noise=noise, **kwargs)
        return self._sde_update(model_output, None, sample, noise)

    def multistep_dpm_solver_second_order_update(self, model_output_list: list[torch.Tensor], *args,
                                                 sample: torch.Tensor | None = None,
                                                 noise: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if self.etas is None or self.config.algorithm_type != "sde-dpmsolver++":
            return super().multistep_dpm_solver_second_order_update(model_output_list, *args, sample=sample,
                                                                    noise=noise, **kwargs)
        return self._sde_update(model_output_list[-1], model_output_list[-2], sample, noise)

    def _log_snr(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        alpha, sigma = self._sigma_to_alpha_sigma_t(self.sigmas[index])
        return alpha, sigma, alpha.log() - sigma.log()

    def _sde_update(self, denoised: torch.Tensor, previous: torch.Tensor | None, sample: torch.Tensor,
                    noise: torch.Tensor) -> torch.Tensor:
        """One step from the data predictions `denoised` (and the step before's, `previous`, for second order)."""
        index = self.step_index
        if self.sigmas[index + 1] == 0:
            return denoised  # the last step lands on the prediction, with nothing left to add noise to
        alpha_t, sigma_t, lambda_t = self._log_snr(index + 1)
        _, sigma_s, lambda_s = self._log_snr(index)
        h = lambda_t - lambda_s
        eta_h = self.etas.view(-1, 1, 1, 1).to(sample.device) * h
        kept = 1 - torch.exp(-h - eta_h)
        x_t = (sigma_t / sigma_s * torch.exp(-eta_h)) * sample + (alpha_t * kept) * denoised
        if previous is not None:
            ratio = (lambda_s - self._log_snr(index - 1)[2]) / h  # the step before's size over this one's
            slope = (1.0 / ratio) * (denoised - previous)
            if self.config.solver_type == "midpoint":
                x_t = x_t + 0.5 * (alpha_t * kept) * slope
            else:  # heun
                x_t = x_t + (alpha_t * (kept / (-h - eta_h) + 1.0)) * slope
        return x_t + sigma_t * torch.sqrt(1.0 - torch.exp(-2.0 * eta_h)) * noise


VARIANTS = {parent.__name__: variant for parent, variant in (
    (EulerAncestralDiscreteScheduler, EtaEulerAncestralDiscreteScheduler),
    (KDPM2AncestralDiscreteScheduler, EtaKDPM2AncestralDiscreteScheduler),
    (DPMSolverSDEScheduler, EtaDPMSolverSDEScheduler),
    (DPMSolverMultistepScheduler, EtaDPMSolverMultistepScheduler))}


def _predicted_original(prediction_type: str, model_output: torch.Tensor, sample: torch.Tensor,
                        sigma: torch.Tensor) -> torch.Tensor:
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (sample / (sigma**2 + 1))
    raise ValueError(f"ancestral eta needs an epsilon or v_prediction model, not {prediction_type!r}")


def with_etas(scheduler, cells: Sequence[dict[str, Any]]):
    """`scheduler`, or its eta variant carrying the cells' etas (A1111's default 1 where a cell sets none) when
    any cell sets one and the batch's sampler takes an ancestral eta."""
    sampler = find_sampler(str(cells[0]["sampler"])) if cells else None
    if sampler is None or sampler.eta is None or all(cell.get("eta") is None for cell in cells):
        return scheduler
    variant = VARIANTS[type(scheduler).__name__].from_config(scheduler.config)
    variant.etas = torch.tensor([ANCESTRAL_DEFAULT_ETA if cell.get("eta") is None else float(cell["eta"])
                                 for cell in cells], dtype=torch.float32)
    return variant
