"""The x4 upscaler variant of gridgen-tiny: `python -m gridgen.tiny.train --variant x4`.

It has the layout of Stable Diffusion's x4 upscaler, so diffusers' `StableDiffusionUpscalePipeline`
and gridgen's `sd-x4` upscaler load it: a 16x16 image is concatenated to the 16x16 noisy latents
(7 UNet input channels), the noise added to that image is the UNet's class label (`noise_level`,
0-350), and the factor-4 VAE decodes the latents to 64x64.

The VAE is the txt2img one, rescaled so that its latents times the x4 pipeline's fixed scaling
factor (0.08333) have unit variance, the same statistics the txt2img UNet was trained on; the UNet
starts from the txt2img UNet (the image channels and the noise-level embedding start at zero) and
learns to redraw the shape at 4x from the blurred, noised small image and the caption.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from gridgen.tiny import data as shapes
from gridgen.tiny.denoiser_training import (
    CAPTION_INDEX,
    DenoiseBatch,
    Ema,
    Logger,
    Settings,
    drop_captions,
    images_tensor,
    train_denoiser,
)
from gridgen.tiny.models import encode_latents, load_txt2img, save_variant, widen_unet

IN_CHANNELS = 7
MAX_NOISE_LEVEL = 350
NOISE_LEVEL_CLASSES = 1000  # as in SD's x4 upscaler: any noise level up to the scheduler's length is a label
PIPELINE_SCALING_FACTOR = 0.08333  # StableDiffusionUpscalePipeline resets any other value to this
LOW_RES = shapes.SIZE // 4
# The schedule that noises the small image; SD's x4 upscaler uses this one.
LOW_RES_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                     "beta_schedule": "scaled_linear", "clip_sample": False, "variance_type": "fixed_small"}
DEFAULTS = {"unet_steps": 2400, "warmup": 100, "unet_lr": 1e-3}


@torch.no_grad()
def rescale_vae(vae, scaling_factor: float) -> None:
    """Multiply `vae`'s latents by k = old/new scaling factor, so `latents * scaling_factor` keeps its
    statistics; decoding is unchanged (the decoder divides by k first)."""
    k = vae.config.scaling_factor / scaling_factor
    channels = vae.config.latent_channels
    vae.quant_conv.weight[:channels] *= k
    vae.quant_conv.bias[:channels] *= k
    vae.quant_conv.bias[channels:] += 2 * math.log(k)  # log-variance of a k-times larger latent
    vae.post_quant_conv.weight /= k
    vae.register_to_config(scaling_factor=scaling_factor)


def downscale(images: torch.Tensor) -> torch.Tensor:
    """64 px images in [-1, 1] to 16 px, antialiased, as a user's small image would be."""
    return F.interpolate(images, size=(LOW_RES, LOW_RES), mode="bicubic", antialias=True).clamp(-1, 1)


def upscale_batches(vae, low_res_scheduler, settings: Settings):
    def make(step: int, gen: torch.Generator) -> DenoiseBatch:
        samples = shapes.make_batch(settings.seed * 1_000_003 + 700_000_001 + step, settings.unet_batch)
        images = images_tensor(samples, vae.device)
        small = downscale(images).cpu()
        levels = torch.randint(0, MAX_NOISE_LEVEL + 1, (len(samples),), generator=gen)
        small = low_res_scheduler.add_noise(small, torch.randn(small.shape, generator=gen), levels)
        caption = torch.tensor([CAPTION_INDEX[s.caption] for s in samples])
        return DenoiseBatch(encode_latents(vae, images), drop_captions(caption, settings.caption_dropout, gen),
                            conditioning=small, class_labels=levels)

    return make


def train(out: Path, settings: Settings, device: torch.device, log: Logger) -> None:
    from diffusers import DDPMScheduler, StableDiffusionUpscalePipeline

    tokenizer, text_encoder, vae, base_unet = load_txt2img()
    rescale_vae(vae, PIPELINE_SCALING_FACTOR)
    unet = widen_unet(base_unet, IN_CHANNELS, num_class_embeds=NOISE_LEVEL_CLASSES)
    with torch.no_grad():
        unet.class_embedding.weight.zero_()
    vae.to(device)
    low_res_scheduler = DDPMScheduler.from_config(LOW_RES_SCHEDULER)
    parts = {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae,
             "low_res_scheduler": low_res_scheduler, "max_noise_level": MAX_NOISE_LEVEL}

    def checkpoint(step: int, ema: Ema) -> None:
        save_variant(StableDiffusionUpscalePipeline, Path(f"{out}-step{step}"), unet=ema.copies[0], **parts)
        log(f"checkpoint at step {step}")

    ema = train_denoiser(unet, text_encoder, tokenizer, upscale_batches(vae, low_res_scheduler, settings), [unet],
                         settings, device, log, checkpoint)
    save_variant(StableDiffusionUpscalePipeline, out, unet=ema.copies[0], **parts)
