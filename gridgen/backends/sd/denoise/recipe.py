"""The one denoising recipe: a run of a diffusers scheduler over a batch, which every kind and stage uses.

A `Recipe` owns, each in one place:
- the per-sample random generators, one per cell seeded by its own seed: every draw of the run (noise,
  VAE posterior samples, image-embedding noise, step noise) comes from them in the order diffusers'
  pipelines draw, so a cell renders the same alone or inside any batch (`generators`, `draw`);
- the scheduler's set-up: `scheduler_for` builds it from the cell's sampler and schedule, `full_schedule`
  sets all its steps and `partial_schedule` the tail a strength covers (img2img);
- the start latents: pure noise (`start_from_noise`) or given latents noised to the first step (`noised`);
- the step-noise arguments that make ancestral and SDE samplers draw per sample, and A1111's sampler options
  (eta: DDIM's as a step argument, the ancestral samplers' through `ancestral_eta`'s schedulers; the sigma
  settings, ENSD's step-noise seeds, variation seeds in the start noise: `noise`, `sampler_options`) when the
  recipe is given its cells' params (`step_kwargs`, `start_noise`);
- the loop (`run`) and its per-step hooks: each `hook(step) -> latents` sees the latents after a scheduler
  step and may rewrite them (inpainting keeps the known part).

So a sampler option (eta, a noise-seed delta, variation seeds) is one edit here, and a per-step latent control
is one hook; a hook holds its own per-sample values (one row per cell), so cells of a batch keep their own.
The guidance that turns the UNet into the denoiser the loop calls is `guidance`, kept apart as k-diffusion
keeps its model wrappers apart from its samplers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gridgen.backends.sd.denoise import ancestral_eta, noise, sampler_options
from gridgen.backends.sd.denoise.guidance import Denoiser
from gridgen.backends.sd.denoise.samplers import make_scheduler, scheduler_choice


@dataclass(frozen=True)
class Step:
    """What a per-step hook sees: the step's index in the run, its timestep and the latents after it."""

    index: int
    timestep: torch.Tensor
    latents: torch.Tensor


StepHook = Callable[[Step], torch.Tensor]


def scheduler_for(params: dict[str, Any], config: dict[str, Any]):
    """A fresh scheduler of the cell's sampler and schedule on the model's scheduler `config`."""
    return make_scheduler(scheduler_choice(str(params["sampler"]), str(params["schedule"])), config)


class Recipe:
    """One run of `scheduler` over a batch whose rows have `seeds`, on `device`; `cells`, the rows' params, bring
    their sampler options (`factor`: the VAE's pixels per latent cell, for seed resizing)."""

    def __init__(self, scheduler, seeds: Sequence[int], device: torch.device, hooks: Iterable[StepHook] = (),
                 cells: Sequence[dict[str, Any]] = (), factor: int = 8):
        # Ancestral samplers honour eta through a scheduler of their own, chosen once the rows' etas are known.
        self.scheduler = ancestral_eta.with_etas(scheduler, cells)
        self.seeds = [int(seed) for seed in seeds]
        self.device = device
        self.generators = [torch.Generator("cpu").manual_seed(seed) for seed in self.seeds]
        self.cells, self.factor = list(cells), factor
        # ENSD moves step noise onto a stream of its own; without it steps draw on from the seed's stream.
        self.step_seeds = [noise.step_seed(cell) for cell in self.cells] or self.seeds
        self.step_generators = [g if step_seed == seed else torch.Generator("cpu").manual_seed(step_seed)
                                for g, seed, step_seed in zip(self.generators, self.seeds, self.step_seeds,
                                                              strict=True)]
        self.hooks = list(hooks)
        self.timesteps: torch.Tensor | None = None

    def restart(self) -> None:
        """Seed every generator afresh, so a further run over the same rows draws as the first did: a script that
        runs img2img again with the cell's seed (outpainting mk2's passes) does the same."""
        for generator, seed in (*zip(self.generators, self.seeds, strict=True),
                                *zip(self.step_generators, self.step_seeds, strict=True)):
            generator.manual_seed(seed)

    def draw(self, shape: Sequence[int]) -> torch.Tensor:
        """One fp32 sample of `shape` per row, each from its row's generator, drawn on the CPU so every device
        starts from the same numbers."""
        rows = [torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in self.generators]
        return torch.cat(rows).to(self.device)

    def full_schedule(self, steps: int) -> torch.Tensor:
        """Set the scheduler to `steps` steps, all of which the run covers."""
        self.scheduler.set_timesteps(steps, device=self.device)
        self.timesteps = self.scheduler.timesteps
        return self.timesteps

    def partial_schedule(self, steps: int, strength: float) -> torch.Tensor:
        """Set the scheduler to `steps` steps, of which the run covers the last `strength`, as diffusers' img2img
        pipelines do (0 covers none, 1 all)."""
        scheduler = self.scheduler
        scheduler.set_timesteps(steps, device=self.device)
        start = steps - min(int(steps * strength), steps)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start * scheduler.order)
        self.timesteps = scheduler.timesteps[start * scheduler.order:]
        return self.timesteps

    def start_noise(self, shape: Sequence[int]) -> torch.Tensor:
        """The start noise, one draw per row: with its cell's variation seed and seed resize when it has them."""
        if not self.cells:
            return self.draw(shape)
        rows = [noise.start_noise(cell, shape, g, self.factor) for cell, g in zip(self.cells, self.generators,
                                                                                  strict=True)]
        return torch.stack(rows).to(self.device)

    def start_from_noise(self, shape: Sequence[int]) -> torch.Tensor:
        """Start latents of pure noise (`start_noise`) at the schedule's first noise level."""
        return self.start_noise(shape) * self.scheduler.init_noise_sigma

    def noised(self, latents: torch.Tensor, noise: torch.Tensor, index: int = 0) -> torch.Tensor:
        """`latents` with `noise` added to the level of the run's step `index`."""
        return self.scheduler.add_noise(latents, noise, self.timesteps[index:index + 1].repeat(latents.shape[0]))

    def step_kwargs(self) -> dict[str, Any]:
        """The keyword arguments the scheduler's `step` needs to draw its step noise per row."""
        if hasattr(self.scheduler, "noise_sampler_seed"):
            # DPMSolverSDEScheduler grows one Brownian tree per sample when handed a list of seeds.
            self.scheduler.noise_sampler_seed = list(self.step_seeds)
        accepts = inspect.signature(self.scheduler.step).parameters
        options = sampler_options.step_kwargs(self.cells[0], set(accepts)) if self.cells else {}
        # diffusers draws a batch's step noise row by row when given one generator per row.
        return {**options, "generator": self.step_generators} if "generator" in accepts else options

    def run(self, denoise: Denoiser, latents: torch.Tensor, hooks: Iterable[StepHook] = ()) -> torch.Tensor:
        """Denoise `latents` over the schedule set last, calling the recipe's hooks and then `hooks` after
        every step."""
        scheduler, step_kwargs, every = self.scheduler, self.step_kwargs(), [*self.hooks, *hooks]
        for index, t in enumerate(self.timesteps):
            eps = denoise(scheduler.scale_model_input(latents, t), t)
            latents = scheduler.step(eps, t, latents, **step_kwargs).prev_sample
            for hook in every:
                latents = hook(Step(index, t, latents))
        return latents
