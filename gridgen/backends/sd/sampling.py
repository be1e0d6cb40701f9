"""The guidance wrapper and the denoising loop, kept apart as k-diffusion keeps them.

`guided_denoiser` turns a UNet plus per-sample conditioning into one function eps(x, t) for the
whole batch; `sample` runs any diffusers scheduler over such a function. All randomness is drawn
per sample from the cell's own seed, so a cell renders the same alone or inside any batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# A batch's cross-attention context: fixed, or computed from the timestep at every step.
Context = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def guided_denoiser(unet, cond: Context, uncond: Context, scales: Sequence[float],
                    image: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
                    masks: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
                    added_cond: dict[str, torch.Tensor] | None = None,
                    added_uncond: dict[str, torch.Tensor] | None = None,
                    uncond_class_labels: torch.Tensor | None = None) -> Denoiser:
    """eps(x, t) with classifier-free guidance at each sample's own scale.

    `cond` and `uncond` hold one context row per sample: fixed tensors (CLIP), or functions of the
    timestep for conditioning that changes along the trajectory (ELLA's TSC).

    Rows at scale 1 are the conditional prediction exactly, so their unconditional half is never sent
    through the UNet. Every other scale needs both halves: below 1 the formula mixes in the
    unconditional prediction (at 0 it is all there is), as A1111's CFG scale does.
    Latents stay fp32 outside the UNet call whatever its dtype. UNets with extra per-sample inputs
    (the x4 upscaler: its low-resolution `image`, joined to the latents' channels, and its noise level
    as `class_labels`) get them on both halves, unless `uncond_class_labels` gives the unconditional half
    its own (unCLIP zeroes its image embedding there). `masks` (cond, uncond), when rows were padded to one
    length, mark each row's real tokens for cross-attention. `added_cond` / `added_uncond` hold
    per-sample `added_cond_kwargs` rows (SDXL's pooled text and size), paired like `cond` / `uncond`.
    """
    device = cond.device if isinstance(cond, torch.Tensor) else unet.device
    guided = torch.tensor([i for i, s in enumerate(scales) if s != 1], dtype=torch.long, device=device)
    scale = torch.tensor(list(scales), dtype=torch.float32, device=device)
    scale = scale.view(-1, 1, 1, 1)
    fixed = None if callable(cond) or callable(uncond) else torch.cat([cond, uncond[guided]])
    image_in = torch.cat([image, image[guided]]) if image is not None else None
    unconditional = class_labels if uncond_class_labels is None else uncond_class_labels
    extra = {"class_labels": torch.cat([class_labels, unconditional[guided]])} if class_labels is not None else {}
    if masks[0] is not None:
        extra["encoder_attention_mask"] = torch.cat([masks[0], masks[1][guided]])
    if added_cond:
        extra["added_cond_kwargs"] = {name: torch.cat([rows, added_uncond[name][guided]])
                                      for name, rows in added_cond.items()}

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        context = fixed if fixed is not None else torch.cat([_at(cond, t), _at(uncond, t)[guided]])
        x_in = torch.cat([x, x[guided]])
        if image_in is not None:
            x_in = torch.cat([x_in, image_in], dim=1)
        eps = unet(x_in.to(unet.dtype), t, encoder_hidden_states=context, **extra).sample.float()
        eps_cond = eps[:batch]
        eps_uncond = eps_cond.clone()
        eps_uncond[guided] = eps[batch:]
        return eps_uncond + scale * (eps_cond - eps_uncond)

    return denoise


def _at(context: Context, t: torch.Tensor) -> torch.Tensor:
    return context(t) if callable(context) else context


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...], device: torch.device,
                  generators: list[torch.Generator] | None = None) -> tuple[torch.Tensor, list[torch.Generator]]:
    """One fp32 noise sample per seed, drawn on the CPU so every device starts from the same latents.

    Returns the generators too: ancestral samplers keep drawing step noise from them. `generators`, when
    given, are the seeds' generators after earlier draws (unCLIP draws its embedding noise first).
    """
    if generators is None:
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
    noise = torch.cat([torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generators])
    return noise.to(device), generators


def step_noise_kwargs(scheduler, seeds: Sequence[int], generators: list[torch.Generator]) -> dict[str, Any]:
    """Make a scheduler's step noise per sample, and return the keyword arguments its `step` needs for that."""
    if hasattr(scheduler, "noise_sampler_seed"):
        # DPMSolverSDEScheduler grows one Brownian tree per sample when handed a list of seeds.
        scheduler.noise_sampler_seed = [int(seed) for seed in seeds]
    accepts = inspect.signature(scheduler.step).parameters
    # diffusers draws a batch's step noise row by row when given one generator per row.
    return {"generator": generators} if "generator" in accepts else {}


def sample(denoise: Denoiser, scheduler, latents: torch.Tensor, step_kwargs: dict[str, Any],
           timesteps: torch.Tensor | None = None,
           after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Run `scheduler` (its timesteps already set) from `latents` to the denoised latents.

    `timesteps`, when given, is the tail of the schedule to run (img2img starts part-way down).
    `after_step(i, latents)`, when given, may rewrite the latents after step i (inpainting's mask blend).
    """
    for i, t in enumerate(scheduler.timesteps if timesteps is None else timesteps):
        eps = denoise(scheduler.scale_model_input(latents, t), t)
        latents = scheduler.step(eps, t, latents, **step_kwargs).prev_sample
        if after_step is not None:
            latents = after_step(i, latents)
    return latents
