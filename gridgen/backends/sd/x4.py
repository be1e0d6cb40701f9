"""The Stable Diffusion x4 upscaler: reading its folder, loading it, and running it on gridgen's sampling loop.

The x4 model is a latent diffusion UNet with 7 input channels: 4 latent channels plus the
low-resolution RGB image, to which its low-res scheduler first adds `noise_level` of noise; the
level also goes in as the UNet's class label. Its VAE works at 4x the latent size, so latents are
as large as the input image and the decoded image is four times larger. diffusers'
`StableDiffusionUpscalePipeline` loads the components; the denoising runs through
`sampling.guided_denoiser` and `sampling.sample`, with the cell's sampler.
"""

from __future__ import annotations

import json
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


def read_x4_info(path: Path) -> X4Info:
    """Check that `path` is an x4 upscaler folder and read its noise limit; raises ModelError."""
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
        unet = json.loads((path / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"upscaler sd-x4: cannot read the configs of {path} ({exc}); re-download the folder") from exc
    if index.get("_class_name") != X4_PIPELINE or unet.get("in_channels") != X4_IN_CHANNELS:
        raise ModelError(f"upscaler sd-x4: {path} is a {index.get('_class_name')} folder whose UNet takes "
                         f"{unet.get('in_channels')} channels, not an x4 upscaler ({X4_PIPELINE}, "
                         f"{X4_IN_CHANNELS} channels); point sd-x4:FOLDER at one")
    return X4Info(path, int(index.get("max_noise_level", 350)))


@dataclass
class X4Model:
    """A loaded x4 upscaler."""

    path: Path
    pipe: Any  # StableDiffusionUpscalePipeline, used as a holder of its components
    prompts: PromptEncoder
    device: torch.device


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
    return X4Model(path, pipe, PromptEncoder(pipe.tokenizer, pipe.text_encoder), device)


@torch.inference_mode()
def x4_upscale(model: X4Model, image: Image.Image, params: dict[str, Any]) -> Image.Image:
    """`image` at four times its size, redrawn by the x4 model under the cell's (or `upscale_prompt`'s) prompt."""
    pipe, device = model.pipe, model.device
    prompt = params.get("upscale_prompt") or str(params["prompt"])
    text = model.prompts.conditioning([(prompt, 1)], [(str(params.get("negative_prompt") or ""), 1)])

    scheduler = make_scheduler(scheduler_choice(str(params["sampler"]), str(params["schedule"])),
                               dict(pipe.scheduler.config))
    scheduler.set_timesteps(int(params["upscale_steps"]), device=device)
    # Drawn from the cell's seed on the CPU, image noise first and latents second, as diffusers' pipeline does.
    generator = torch.Generator("cpu").manual_seed(int(params["seed"]))
    low_res = to_tensor(image, torch.device("cpu")) * 2 - 1
    image_noise = torch.randn(low_res.shape, generator=generator, dtype=torch.float32)
    channels = pipe.vae.config.latent_channels
    latents = torch.randn((1, channels, *low_res.shape[2:]), generator=generator, dtype=torch.float32)

    level = torch.tensor([int(params["noise_level"])], dtype=torch.long, device=device)
    noised = pipe.low_res_scheduler.add_noise(low_res.to(device), image_noise.to(device), level)
    denoise = sampling.guided_denoiser(pipe.unet, text.cond, text.uncond, [float(params["upscale_cfg_scale"])],
                                       image=noised.to(pipe.unet.dtype), class_labels=level,
                                       masks=(text.cond_mask, text.uncond_mask))
    seeds = [int(params["seed"])]
    latents = sampling.sample(denoise, scheduler, latents.to(device) * scheduler.init_noise_sigma,
                              sampling.step_noise_kwargs(scheduler, seeds, [generator]))
    (result,) = images.decode(pipe.vae, latents.float())
    return result
