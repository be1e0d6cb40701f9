"""The inpaint variant of gridgen-tiny: `python -m gridgen.tiny.train --variant inpaint`.

It is the txt2img model with a 9-channel UNet (noisy latents, the latent-size mask, the latents of
the masked image, in the order diffusers' `StableDiffusionInpaintPipeline` concatenates them),
fine-tuned from the txt2img UNet with the text encoder and VAE frozen and shared. Each training
image is one of three tasks an inpainting grid asks for:

- remove: the region around the shape is masked and the target is the plain background, captioned
  `a {background} background`;
- fill: the same kind of region is masked and the target is the image, captioned in full, so the
  prompt decides what appears in the hole;
- whole: everything is masked, which keeps plain txt2img working.

Masks are the shape dilated by 0-8 px or its bounding box grown by 0-8 px: what a segmenter's mask
looks like once dilated, as Inpaint Anything does before it inpaints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from gridgen.tiny import data as shapes
from gridgen.tiny.denoiser_training import (
    CAPTION_INDEX,
    DenoiseBatch,
    Ema,
    Logger,
    Settings,
    drop_captions,
    train_denoiser,
)
from gridgen.tiny.models import encode_latents, load_txt2img, save_variant, widen_unet

IN_CHANNELS = 9
TASKS = ("remove", "fill", "whole")
TASK_WEIGHTS = (0.4, 0.45, 0.15)
MAX_GROW = 8  # px a mask extends past the shape
DEFAULTS = {"unet_steps": 600, "warmup": 100, "unet_lr": 1e-3}


def mask_around(sample: shapes.Sample, grow: int, box: bool) -> np.ndarray:
    """The shape's pixels grown by `grow` px, or its bounding box grown by `grow` px: (64, 64) bool."""
    if box:
        x0, y0, x1, y1 = sample.box
        mask = np.zeros_like(sample.mask)
        mask[max(0, y0 - grow):y1 + grow, max(0, x0 - grow):x1 + grow] = True
        return mask
    return ndimage.binary_dilation(sample.mask, iterations=grow) if grow else sample.mask.copy()


def masked_images(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] with the masked pixels set to 0 (mid gray), as the diffusers pipeline masks them."""
    return images * (masks < 0.5)


def latent_masks(masks: torch.Tensor, latent_side: int) -> torch.Tensor:
    """(n, 1, 64, 64) pixel masks brought to latent size the way the diffusers pipeline does it."""
    return F.interpolate(masks, size=(latent_side, latent_side))


def inpaint_batches(vae, settings: Settings):
    def make(step: int, gen: torch.Generator) -> DenoiseBatch:
        rng = np.random.default_rng([settings.seed, 9, step])
        samples = shapes.make_batch(settings.seed * 1_000_003 + 500_000_009 + step, settings.unet_batch)
        targets, masks, captions = [], [], []
        for sample in samples:
            task = TASKS[rng.choice(len(TASKS), p=TASK_WEIGHTS)]
            region = mask_around(sample, int(rng.integers(0, MAX_GROW + 1)), bool(rng.random() < 0.5))
            if task == "whole":
                region = np.ones_like(region)
            targets.append(shapes.blank(sample.background) if task == "remove" else sample.image)
            masks.append(region)
            captions.append(shapes.background_caption(sample.background) if task == "remove" else sample.caption)
        images = torch.from_numpy(shapes.images_to_array(targets))
        pixel_masks = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
        latents = encode_latents(vae, images)
        conditioning = torch.cat([latent_masks(pixel_masks, latents.shape[-1]),
                                  encode_latents(vae, masked_images(images, pixel_masks))], dim=1)
        caption = torch.tensor([CAPTION_INDEX[c] for c in captions])
        return DenoiseBatch(latents, drop_captions(caption, settings.caption_dropout, gen), conditioning)

    return make


def train(out: Path, settings: Settings, device: torch.device, log: Logger) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    tokenizer, text_encoder, vae, base_unet = load_txt2img()
    unet = widen_unet(base_unet, IN_CHANNELS)
    vae.to(device)
    parts = {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae, "requires_safety_checker": False}

    def checkpoint(step: int, ema: Ema) -> None:
        save_variant(StableDiffusionInpaintPipeline, Path(f"{out}-step{step}"), unet=ema.copies[0], **parts)
        log(f"checkpoint at step {step}")

    ema = train_denoiser(unet, text_encoder, tokenizer, inpaint_batches(vae, settings), [unet],
                         settings, device, log, checkpoint)
    save_variant(StableDiffusionInpaintPipeline, out, unet=ema.copies[0], **parts)
