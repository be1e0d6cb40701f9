"""The Stable Diffusion x4 upscaler: reading its folder, loading it, and running it on gridgen's sampling loop.

The x4 model is a latent diffusion UNet with 7 input channels: 4 latent channels plus the
low-resolution RGB image, to which its low-res scheduler first adds `noise_level` of noise; the
level also goes in as the UNet's class label. Its VAE works at 4x the latent size, so latents are
as large as the input image and the decoded image is four times larger. For the upscale stage
diffusers' `StableDiffusionUpscalePipeline` loads the components; as a model kind (`kinds.x4`) the
normal model loading does. Both run `denoise`, one batched loop through `guidance.guided_denoiser`
and `recipe.Recipe` with the cell's sampler, in which every row keeps its own image, noise level,
prompt, seed and CFG scale.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.denoise.inference import inference_mode
from gridgen.backends.sd.kinds.channels import CHANNELS
from gridgen.backends.sd.stages.upscalers import parse_upscaler
from gridgen.errors import ModelError

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.denoise.guidance import Guide
    from gridgen.backends.sd.denoise.recipe import Recipe
    from gridgen.backends.sd.text.clip import PromptEncoder

X4_PIPELINE = "StableDiffusionUpscalePipeline"
X4_IN_CHANNELS = CHANNELS["x4-upscaler"]
# The SD x4 upscaler's usual max_noise_level: the range noise_level keeps where the stage alone reads it.
X4_NOISE_RANGE = 350
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


def stage_noise_level_problems(params: dict[str, Any]) -> list[ParamProblem]:
    """A noise_level over the x4 upscale stage's range, on a model whose base image does not read it."""
    level = int(params["noise_level"])
    try:
        x4_reads_it = parse_upscaler(str(params["upscaler"])).family == "sd-x4"
    except ValueError:
        x4_reads_it = True  # the upscale stage reports the value; its range is that stage's to judge
    if level > X4_NOISE_RANGE and not x4_reads_it:
        return [ParamProblem("noise_level", f"noise_level {level}: model {params['model']!r} is not an unCLIP model, "
                                            f"so noise_level is the SD x4 upscaler's (0-{X4_NOISE_RANGE}); levels up "
                                            f"to 999 noise the image embedding of unCLIP models")]
    return []


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

    from gridgen.backends.sd.text.clip import PromptEncoder

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


def denoise(parts, low_res_scheduler, pixels: torch.Tensor, levels: Sequence[int], recipe: Recipe, guide: Guide,
            steps: int) -> torch.Tensor:
    """The batch's denoised latents, upscales of `pixels` ((N, 3, h, w) in [-1, 1], one low-res image per row).

    `parts` holds the model's `unet` and `vae`; `levels` is each row's noise_level. Each row's generator draws its
    image noise, then its latents, then any step noise: the order diffusers' pipeline draws them in.
    """
    import torch

    unet = parts.unet
    image_noise = recipe.draw(pixels.shape[1:])
    noise = recipe.start_noise((parts.vae.config.latent_channels, *pixels.shape[2:]))
    level = torch.tensor([int(n) for n in levels], dtype=torch.long, device=recipe.device)
    noised = low_res_scheduler.add_noise(pixels.float().to(recipe.device), image_noise, level)
    recipe.full_schedule(steps)
    return recipe.run(guide(image=noised.to(unet.dtype), class_labels=level), noise * recipe.scheduler.init_noise_sigma)


@inference_mode
def x4_upscale(model: X4Model, image: Image.Image, params: dict[str, Any]) -> Image.Image:
    """`image` at four times its size, redrawn by the x4 model under the cell's (or `upscale_prompt`'s) prompt."""
    import torch

    from gridgen.backends.sd.denoise.guidance import guide_for
    from gridgen.backends.sd.denoise.recipe import Recipe, scheduler_for
    from gridgen.backends.sd.images import images
    from gridgen.backends.sd.images.resample import to_tensor

    pipe = model.pipe
    prompt = params.get("upscale_prompt") or str(params["prompt"])
    text = model.prompts.conditioning([(prompt, 1)], [(str(params.get("negative_prompt") or ""), 1)])
    # The cell's sampler options (eta, ENSD, the sigma settings, variation seeds) reach this pass as the base's.
    recipe = Recipe(scheduler_for(params, dict(pipe.scheduler.config)), [int(params["seed"])], pipe.unet.device,
                    cells=[params], factor=2 ** (len(pipe.vae.config.block_out_channels) - 1))
    guide = guide_for(pipe.unet, text.cond, text.uncond, [float(params["upscale_cfg_scale"])],
                      masks=(text.cond_mask, text.uncond_mask))
    latents = denoise(pipe, pipe.low_res_scheduler, to_tensor(image, torch.device("cpu")) * 2 - 1,
                      [int(params["noise_level"])], recipe, guide, int(params["upscale_steps"]))
    (result,) = images.decode(pipe.vae, latents.float())
    return result
