"""The txt2img model of gridgen-tiny, trained from nothing: `python -m gridgen.tiny.train --variant txt2img`.

The VAE first, on random crops of freshly drawn images; then, with it frozen, a pool of latents is encoded once
and the UNet and text encoder learn to denoise them together (see `gridgen.tiny.denoiser_training`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
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
    lr_factor,
    train_denoiser,
)
from gridgen.tiny.models import build_text_encoder, build_unet, build_vae, save_txt2img
from gridgen.tiny.tokenizer import build_tokenizer


def train_vae(vae, settings: Settings, device: torch.device, log: Logger) -> None:
    vae.to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    running = 0.0
    for step in range(settings.vae_steps):
        for group in opt.param_groups:
            group["lr"] = settings.vae_lr * lr_factor(step, settings.vae_steps, settings.warmup)
        x = random_crops(images_tensor(shapes.make_batch(settings.seed * 1_000_003 + step, settings.vae_batch),
                                       device), settings.vae_crop, step)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + settings.vae_kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        running += loss.item()
        if (step + 1) % settings.log_every == 0:
            log(f"vae step {step + 1}/{settings.vae_steps} loss {running / settings.log_every:.4f}")
            running = 0.0
    vae.eval().requires_grad_(False)


def random_crops(x: torch.Tensor, side: int, seed: int) -> torch.Tensor:
    if side >= x.shape[-1]:
        return x
    offsets = np.random.default_rng(seed).integers(0, x.shape[-1] - side + 1, size=(len(x), 2))
    return torch.stack([img[:, y:y + side, x0:x0 + side] for img, (y, x0) in zip(x, offsets, strict=True)])


@torch.no_grad()
def encode_pool(vae, settings: Settings, device: torch.device, log: Logger):
    """Latent mean and std of `pool_size` fresh images, with each image's caption index; sets the
    VAE's scaling factor so the scaled latents have unit variance."""
    samples = shapes.make_batch(settings.seed * 1_000_003 + 999_999_937, settings.pool_size)
    means, stds = [], []
    for start in range(0, len(samples), 256):
        posterior = vae.encode(images_tensor(samples[start:start + 256], device)).latent_dist
        means.append(posterior.mean.cpu())
        stds.append(posterior.std.cpu())
    mean, std = torch.cat(means), torch.cat(stds)
    scale = 1.0 / float(mean.std())
    vae.register_to_config(scaling_factor=scale)
    captions = torch.tensor([CAPTION_INDEX[s.caption] for s in samples])
    log(f"encoded {len(samples)} images: latent mean {float(mean.mean()):+.3f} std {float(mean.std()):.3f} "
        f"(scaling factor {scale:.4f}), posterior std {float(std.mean()):.4f}; "
        f"recon MAE {reconstruction_error(vae, samples[:256], device):.4f}")
    return mean * scale, std * scale, captions


@torch.no_grad()
def reconstruction_error(vae, samples: list[shapes.Sample], device: torch.device) -> float:
    x = images_tensor(samples, device)
    return float((vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1) - x).abs().mean() / 2)


def pool_batches(pool, settings: Settings) -> Callable[[int, torch.Generator], DenoiseBatch]:
    """txt2img batches: latents drawn from the encoded pool's posteriors, flipped half the time."""
    mean, std, captions = pool

    def make(step: int, gen: torch.Generator) -> DenoiseBatch:
        index = torch.randint(0, len(mean), (settings.unet_batch,), generator=gen)
        latents = mean[index] + std[index] * torch.randn(mean[index].shape, generator=gen)
        flip = torch.rand(settings.unet_batch, generator=gen) < 0.5  # every shape is left-right symmetric
        latents = torch.where(flip.view(-1, 1, 1, 1), latents.flip(-1), latents)
        return DenoiseBatch(latents, drop_captions(captions[index], settings.caption_dropout, gen))

    return make


def train(out: Path, settings: Settings, device: torch.device, log: Logger) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(Path(tmp))
    text_encoder, vae, unet = build_text_encoder(tokenizer), build_vae(), build_unet()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    log(f"params: vae {count(vae):,}, unet {count(unet):,}, text encoder {count(text_encoder):,}")
    train_vae(vae, settings, device, log)
    pool = encode_pool(vae, settings, device, log)

    def checkpoint(step: int, ema: Ema) -> None:
        where = save_txt2img(Path(f"{out}-step{step}"), tokenizer, ema.copies[1], ema.copies[0], vae)
        log(f"checkpoint at step {step} -> {where}")

    ema = train_denoiser(unet, text_encoder, tokenizer, pool_batches(pool, settings), [unet, text_encoder],
                         settings, device, log, checkpoint)
    save_txt2img(out, tokenizer, ema.copies[1], ema.copies[0], vae)
