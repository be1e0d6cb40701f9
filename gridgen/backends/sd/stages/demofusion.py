"""DemoFusion (Du et al., CVPR 2024) as the `demofusion` upscaler and as `demofusion_scale`, its txt2img mode: the
base image grown in phases by the cell's own model, each phase redrawing the previous one at one more multiple of
the base size.

Phase 1 is the base image. Phase k starts from phase k-1's latents enlarged (bicubic) to k times the base size and
fully noised, and is denoised over the cell's whole schedule with three guides of the composition:

- skip residuals: after every step the latents are pulled towards the enlarged phase k-1 latents noised to the
  next step's level, with a weight (a cosine of the timestep) ** `cosine_scale_1` that is 1 at the start and falls
  to 0, so the early, structural steps follow the previous phase and the late ones draw detail;
- local patches: the canvas's overlapping windows of the model's native size (`stride` pixels apart, batched by
  `view_batch_size`), their predictions averaged, as tiled diffusion does;
- dilated sampling: the k x k interleaved sub-grids of the canvas (every k-th latent cell), each of the native
  size and so each a whole picture at the model's scale, denoised on a Gaussian-blurred copy of the canvas
  (kernel 2k-1, spread `sigma` times a cosine ** `cosine_scale_3`) and mixed in with weight cosine **
  `cosine_scale_2`: a global view that keeps one composition where windows alone would each draw the subject.

On SDXL every phase is conditioned on its canvas's size; each local patch carries its own top-left corner as
its crop coordinates and the dilated views an uncropped (0, 0), as the reference pipeline does.

Each mix is taken over the noise predictions rather than over each view's stepped latents (as the reference
pipeline does with DDIM), which is the same for deterministic samplers and lets any scheduler run the loop. Each
phase's latents are matched to the base image's latent mean and spread, as the reference does. Every phase's image
is kept in the stage cache, so upscale_by (or demofusion_scale) 2, 3 and 4 of one base image compute each phase
once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from gridgen.backends.sd.denoise import multidiffusion
from gridgen.backends.sd.denoise.guidance import Denoiser, Guide, guide_for
from gridgen.backends.sd.denoise.img2img import encode
from gridgen.backends.sd.denoise.recipe import Recipe, Step, scheduler_for
from gridgen.backends.sd.images import images
from gridgen.backends.sd.images.resample import resample, to_tensor
from gridgen.backends.sd.text.clip_xl import added_pair

# What DemoFusion reads besides the size; view_batch_size only splits the work, so it is not among them.
READS = ("cosine_scale_1", "cosine_scale_2", "cosine_scale_3", "sigma", "stride")
# A phase's image from the stage cache, or computed and kept: (phase, compute) -> image.
PhaseCache = Callable[[int, Callable[[], Image.Image]], Image.Image]


def phase_count(base: tuple[int, int], size: tuple[int, int]) -> int:
    """The phases that reach `size` from a `base`-sized image: one per multiple of the base size, rounded up."""
    return max(1, math.ceil(max(size[0] / base[0], size[1] / base[1]) - 1e-9))


def cosine(t: torch.Tensor, train_steps: int) -> float:
    """1 at the first (noisiest) timestep, falling to 0 at the last."""
    return 0.5 * (1 + math.cos(math.pi * (train_steps - float(t)) / train_steps))


def gaussian_blur(latents: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """`latents` blurred per channel by a `size` x `size` Gaussian kernel of spread `sigma`."""
    offsets = torch.arange(size, dtype=torch.float32, device=latents.device) - (size - 1) / 2
    line = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    line = line / line.sum()
    channels = latents.shape[1]
    kernel = (line[:, None] * line[None, :]).expand(channels, 1, size, size).to(latents.dtype)
    return F.conv2d(latents, kernel, padding=size // 2, groups=channels)


def fused_denoiser(guide: Guide, scale: int, window: int, stride: int, batch: int, settings: dict[str, float],
                   train_steps: int, factor: int) -> Denoiser:
    """eps(x, t) over a canvas `scale` times the base latents: local windows of `window` latent cells `stride`
    apart (`factor` pixels per latent cell), mixed with the dilated global views by cosine ** cosine_scale_2."""
    windows = multidiffusion.Windows(window * factor, (window - stride) * factor, batch)
    local = multidiffusion.tiled_guide(guide, windows, factor)()
    offsets = [(dy, dx) for dy in range(scale) for dx in range(scale)]

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps_local = local(x, t)
        weight = cosine(t, train_steps) ** settings["cosine_scale_2"]
        if scale == 1 or weight == 0:
            return eps_local
        spread = settings["sigma"] * (0.99 * cosine(t, train_steps) ** settings["cosine_scale_3"] + 1e-2)
        blurred = gaussian_blur(x, 2 * scale - 1, spread)
        # The blur narrows the latents' spread, which the UNet reads as a noise level: restore it.
        blurred = (blurred - blurred.mean()) / blurred.std() * x.std() + x.mean()
        eps_global = torch.zeros_like(x, dtype=torch.float32)
        rows = x.shape[0]
        for chunk in multidiffusion.chunks(offsets, batch):
            views = torch.cat([blurred[:, :, dy::scale, dx::scale] for dy, dx in chunk])
            eps = multidiffusion.repeated(guide, len(chunk), {}, None, tuple(x.shape[-2:]))(views, t)  # uncropped
            for index, (dy, dx) in enumerate(chunk):
                eps_global[:, :, dy::scale, dx::scale] = eps[index * rows:(index + 1) * rows].float()
        return eps_local * (1 - weight) + eps_global * weight

    return denoise


def _settings(params: dict[str, Any]) -> dict[str, float]:
    return {name: float(params[name]) for name in ("cosine_scale_1", "cosine_scale_2", "cosine_scale_3", "sigma")}


@torch.inference_mode()
def next_phase(parts, guide_at: Callable[[int, int], Guide], previous: Image.Image, phase: int,
               base_size: tuple[int, int], anchor: tuple[float, float], params: dict[str, Any]) -> Image.Image:
    """Phase `phase` (2 and up) of DemoFusion from phase `phase - 1`'s image `previous`; `guide_at(width, height)`
    is the cell's guide conditioned on a canvas of that size."""
    factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
    native = parts.unet.config.sample_size
    tiling = str(params["vae_tiling"])
    recipe = Recipe(scheduler_for(params, parts.scheduler_config), [int(params["seed"])], parts.device)
    start = encode(parts.vae, to_tensor(previous, parts.device) * 2 - 1, recipe.generators, tiling)
    width, height = base_size[0] * phase // factor, base_size[1] * phase // factor
    enlarged = F.interpolate(start, size=(height, width), mode="bicubic")
    timesteps = recipe.full_schedule(int(params["steps"]))
    noise = recipe.draw(enlarged.shape[1:])
    train_steps = int(recipe.scheduler.config.num_train_timesteps)
    settings = _settings(params)

    def skip_residual(step: Step) -> torch.Tensor:
        following = step.index + 1
        if following >= len(timesteps):
            return step.latents
        weight = cosine(timesteps[following], train_steps) ** settings["cosine_scale_1"]
        return step.latents * (1 - weight) + recipe.noised(enlarged, noise, following) * weight

    stride = int(params.get("stride") or native * factor // 2) // factor
    guide = guide_at(width * factor, height * factor)
    denoise = fused_denoiser(guide, phase, native, stride, int(params["view_batch_size"]), settings, train_steps,
                             factor)
    latents = recipe.run(denoise, recipe.noised(enlarged, noise), hooks=[skip_residual])
    mean, spread = anchor
    latents = (latents - latents.mean()) / latents.std() * spread + mean
    (image,) = images.decode(parts.vae, latents, tiling)
    return image


@torch.inference_mode()
def upscale(parts, prompts, base: Image.Image, size: tuple[int, int], params: dict[str, Any],
            cached: PhaseCache) -> Image.Image:
    """DemoFusion from the base image to `size`: phases up to the first multiple of the base size that covers it,
    then resampled to `size`."""
    factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
    base_size = (base.width // factor * factor, base.height // factor * factor)
    skip = int(params["clip_skip"])
    requests = [(str(params["prompt"]), skip)], [(str(params["negative_prompt"]), skip)]
    text = prompts.conditioning(*requests)

    def guide_at(width: int, height: int) -> Guide:
        return guide_for(parts.unet, text.cond, text.uncond, [float(params["cfg_scale"])],
                         masks=(text.cond_mask, text.uncond_mask), **added_pair(prompts, *requests, width, height))
    first = resample(base, base_size)
    anchor_latents = encode(parts.vae, to_tensor(first, parts.device) * 2 - 1,
                            [torch.Generator("cpu").manual_seed(int(params["seed"]))], str(params["vae_tiling"]))
    anchor = (float(anchor_latents.mean()), float(anchor_latents.std()))
    image = first
    for phase in range(2, phase_count(base_size, size) + 1):
        previous = image
        image = cached(phase, lambda p=phase, prev=previous: next_phase(parts, guide_at, prev, p, base_size, anchor,
                                                                        params))
    return resample(image, size)
