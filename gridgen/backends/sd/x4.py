"""The Stable Diffusion x4 upscaler: reading its folder, loading it, and running it on gridgen's sampling loop.

The x4 model is a latent diffusion UNet with 7 input channels: 4 latent channels plus the
low-resolution RGB image, to which its low-res scheduler first adds `noise_level` of noise; the
level also goes in as the UNet's class label. Its VAE works at 4x the latent size, so latents are
as large as the input image and the decoded image is four times larger. For the upscale stage
diffusers' `StableDiffusionUpscalePipeline` loads the components; as a model kind (`x4_kind`) the
normal model loading does. Both run `denoise`, one batched loop through `sampling.guided_denoiser`
and `sampling.sample` with the cell's sampler, in which every row keeps its own image, noise level,
prompt, seed and CFG scale.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gridgen.backends.sd import images, sampling
from gridgen.backends.sd.text import PromptEncoder
from gridgen.backends.sd.upscale import to_tensor
from gridgen.errors import ModelError
from gridgen.samplers import make_scheduler, scheduler_choice

X4_PIPELINE = "StableDiffusionUpscalePipeline"
X4_IN_CHANNELS = 7
FACTOR = 4


@dataclass(frozen=True)
class X4Info:
    """What an x4 upscaler folder's configs say, without loading weights."""

    path: Path
    max_noise_level: int


def read_x4_info(path: Path, what: str = "upscaler sd-x4", fix: str = "point sd-x4:FOLDER at one") -> X4Info:
    """Check that `path` is an x4 upscaler folder and read its noise limit; raises ModelError whose message
    starts with `what`, the value that named the folder, and ends with `fix`, what to do about a folder of
    another kind."""
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
        unet = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{what}: cannot read the configs of {path} ({exc}); re-download the folder") from exc
    if index.get("_class_name") != X4_PIPELINE or unet.get("in_channels") != X4_IN_CHANNELS:
        raise ModelError(f"{what}: {path} is a {index.get('_class_name')} folder whose UNet takes "
                         f"{unet.get('in_channels')} channels, not an x4 upscaler ({X4_PIPELINE}, "
                         f"{X4_IN_CHANNELS} channels); {fix}")
    return X4Info(path, int(index.get("max_noise_level", 350)))


@dataclass
class X4Model:
    """A loaded x4 upscaler."""

    path: Path
    pipe: Any  # StableDiffusionUpscalePipeline, used as a holder of its components
    prompts: PromptEncoder


def load_x4(path: Path, device: torch.device, dtype: torch.dtype) -> X4Model:
    """Load the x4 upscaler in `path`; raises ModelError."""
    from diffusers import StableDiffusionUpscalePipeline
    from diffusers.utils import logging
    from safetensors import SafetensorError

    logging.disable_progress_bar()  # a loading bar would interleave with the grid's own progress bar

    try:
        pipe = StableDiffusionUpscalePipeline.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ModelError(f"upscaler sd-x4: cannot load {path}: {exc}; check that it is a complete diffusers "
                         f"x4 upscaler folder") from exc
    # The x4 VAE overflows in fp16 (diffusers upcasts it too) and is small, so it stays fp32.
    for part in (pipe.unet, pipe.text_encoder):
        part.to(device=device, dtype=dtype)
    pipe.vae.to(device)
    return X4Model(path, pipe, PromptEncoder(pipe.tokenizer, pipe.text_encoder))


def load_low_res_scheduler(config: Path):
    """The scheduler that noises the low-resolution image, as the x4 folder (or shipped family) `config` declares
    it; raises ModelError."""
    import diffusers

    try:
        index = json.loads((config / "model_index.json").read_text(encoding="utf-8"))
        scheduler_class = getattr(diffusers, index["low_res_scheduler"][1])
        return scheduler_class.from_pretrained(config / "low_res_scheduler", local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"cannot load the low_res_scheduler of x4 upscaler {config}: {exc}; check that it is a "
                         f"complete {X4_PIPELINE} folder (re-download it)") from exc


def denoise(parts, low_res_scheduler, pixels: torch.Tensor, levels: Sequence[int], scheduler, cond, uncond,
            scales: Sequence[float], steps: int, seeds: Sequence[int], **text: Any) -> torch.Tensor:
    """The batch's denoised latents, upscales of `pixels` ((N, 3, h, w) in [-1, 1], one low-res image per row).

    `parts` holds the model's `unet` and `vae`; `levels` is each row's noise_level; `text` the rest of the
    batch's text conditioning for `sampling.guided_denoiser` (token masks). Each row's generator draws its
    image noise, then its latents, then any step noise: the order diffusers' pipeline draws them in.
    """
    unet = parts.unet
    device = unet.device
    generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
    image_noise = torch.cat([torch.randn((1, *pixels.shape[1:]), generator=g, dtype=torch.float32)
                             for g in generators])
    latents, _ = sampling.initial_noise(seeds, (parts.vae.config.latent_channels, *pixels.shape[2:]), device,
                                        generators)
    level = torch.tensor([int(n) for n in levels], dtype=torch.long, device=device)
    noised = low_res_scheduler.add_noise(pixels.float().to(device), image_noise.to(device), level)
    scheduler.set_timesteps(steps, device=device)
    guided = sampling.guided_denoiser(unet, cond, uncond, scales, image=noised.to(unet.dtype), class_labels=level,
                                      **text)
    return sampling.sample(guided, scheduler, latents * scheduler.init_noise_sigma,
                           sampling.step_noise_kwargs(scheduler, seeds, generators))


@torch.inference_mode()
def x4_upscale(model: X4Model, image: Image.Image, params: dict[str, Any]) -> Image.Image:
    """`image` at four times its size, redrawn by the x4 model under the cell's (or `upscale_prompt`'s) prompt."""
    pipe = model.pipe
    prompt = params.get("upscale_prompt") or str(params["prompt"])
    text = model.prompts.conditioning([(prompt, 1)], [(str(params.get("negative_prompt") or ""), 1)])
    scheduler = make_scheduler(scheduler_choice(str(params["sampler"]), str(params["schedule"])),
                               dict(pipe.scheduler.config))
    latents = denoise(pipe, pipe.low_res_scheduler, to_tensor(image, torch.device("cpu")) * 2 - 1,
                      [int(params["noise_level"])], scheduler, text.cond, text.uncond,
                      [float(params["upscale_cfg_scale"])], int(params["upscale_steps"]), [int(params["seed"])],
                      masks=(text.cond_mask, text.uncond_mask))
    (result,) = images.decode(pipe.vae, latents.float())
    return result
