"""What every gridgen-tiny trainer shares: the `Settings` (whose defaults made the shipped weights), the
learning-rate schedule, the log, and the denoiser training loop (epsilon prediction on SD's noise schedule,
min-SNR weighting, caption dropout for classifier-free guidance, an EMA of the trained weights).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gridgen.tiny import data as shapes
from gridgen.tiny.models import SCHEDULER_CONFIG


@dataclass
class Settings:
    """Training settings; the defaults made the shipped weights."""

    seed: int = 0
    vae_steps: int = 1000
    vae_batch: int = 32
    vae_crop: int = 32  # the VAE trains on random crops of this side (it is fully convolutional)
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    pool_size: int = 20000  # images encoded once for the UNet
    unet_steps: int = 2000
    unet_batch: int = 64
    unet_lr: float = 2e-3
    warmup: int = 200
    caption_dropout: float = 0.1
    min_snr: float = 5.0  # min-SNR loss weighting
    ema_decay: float = 0.998
    log_every: int = 50
    checkpoint_every: int = 0  # also save the pipeline every N UNet steps, to OUT-stepN (0: only at the end)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lr_factor(step: int, total: int | None, warmup: int) -> float:
    """Linear warmup, then a cosine decay to 5% of the peak at `total`, or constant when `total` is None."""
    if step < warmup:
        return (step + 1) / warmup
    if total is None:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Logger:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", flush=True)


def images_tensor(samples: list[shapes.Sample], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(shapes.to_tensor_array(samples)).to(device)


# Background-only captions come last, so the shape captions keep the indices the txt2img weights were trained with.
ALL_CAPTIONS = [*(shapes.caption(c, s, b) for c in shapes.COLORS for s in shapes.SHAPES for b in shapes.BACKGROUNDS),
                *(shapes.background_caption(b) for b in shapes.BACKGROUNDS)]
CAPTION_INDEX = {text: i for i, text in enumerate(ALL_CAPTIONS)}
EMPTY = len(ALL_CAPTIONS)  # index of the dropped (empty) caption


class Ema:
    """An exponential moving average of some modules' parameters, with the usual warmup of the decay."""

    def __init__(self, modules: list[torch.nn.Module], decay: float):
        self.modules = modules
        self.copies = [copy.deepcopy(m).eval().requires_grad_(False) for m in modules]
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for module, shadow in zip(self.modules, self.copies, strict=True):
            for p, q in zip(module.parameters(), shadow.parameters(), strict=True):
                q.lerp_(p.detach(), 1 - decay)


@dataclass
class DenoiseBatch:
    """One training batch for a denoiser: clean latents, caption indices, and the variant's extras."""

    latents: torch.Tensor
    caption: torch.Tensor  # indices into ALL_CAPTIONS, EMPTY for a dropped caption
    conditioning: torch.Tensor | None = None  # channels concatenated after the noisy latents
    class_labels: torch.Tensor | None = None  # the x4 upscaler's noise level


def training_alphas(device: torch.device) -> torch.Tensor:
    """alpha-bar of SD's scaled-linear schedule (SCHEDULER_CONFIG), one per training timestep."""
    betas = torch.linspace(SCHEDULER_CONFIG["beta_start"] ** 0.5, SCHEDULER_CONFIG["beta_end"] ** 0.5,
                           SCHEDULER_CONFIG["num_train_timesteps"], dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float().to(device)


def caption_ids(tokenizer, device: torch.device) -> torch.Tensor:
    """Token ids of every caption in ALL_CAPTIONS, then of the empty prompt (index EMPTY)."""
    return tokenizer([*ALL_CAPTIONS, ""], padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids.to(device)


def drop_captions(caption: torch.Tensor, rate: float, gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(len(caption), generator=gen) < rate, torch.full_like(caption, EMPTY), caption)


def train_denoiser(unet, text_encoder, tokenizer, make_batch: Callable[[int, torch.Generator], DenoiseBatch],
                   trainable: list[torch.nn.Module], settings: Settings, device: torch.device, log: Logger,
                   checkpoint: Callable[[int, Ema], None] | None = None) -> Ema:
    """Epsilon-prediction training of `unet` on batches from `make_batch`, min-SNR weighted.

    The text encoder is trained too when it is in `trainable`; the returned EMA shadows `trainable`.
    """
    ids = caption_ids(tokenizer, device)
    alphas_cumprod = training_alphas(device)
    unet.to(device).train()
    text_encoder.to(device).train(text_encoder in trainable)
    params = [p for module in trainable for p in module.parameters()]
    opt = torch.optim.AdamW(params, lr=settings.unet_lr, betas=(0.9, 0.99), weight_decay=0.01)
    ema = Ema(trainable, settings.ema_decay)
    gen = torch.Generator().manual_seed(settings.seed + 12345)
    running, clock = 0.0, time.perf_counter()
    for step in range(settings.unet_steps):
        for group in opt.param_groups:
            # constant after warmup: the weights after N steps do not depend on the total, so the
            # checkpoint at step N of a longer run is exactly what `--steps N` ships
            group["lr"] = settings.unet_lr * lr_factor(step, None, settings.warmup)
        batch = make_batch(step, gen)
        t = torch.randint(0, len(alphas_cumprod), (len(batch.latents),), generator=gen)
        noise = torch.randn(batch.latents.shape, generator=gen)
        latents, noise, caption, t = (v.to(device) for v in (batch.latents, noise, batch.caption, t))
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        if batch.conditioning is not None:
            noisy = torch.cat([noisy, batch.conditioning.to(device)], dim=1)
        labels = batch.class_labels.to(device) if batch.class_labels is not None else None
        context = text_encoder(ids[caption]).last_hidden_state
        pred = unet(noisy, t, encoder_hidden_states=context, class_labels=labels).sample
        snr = a.view(-1) / (1 - a.view(-1))
        weight = torch.clamp(snr, max=settings.min_snr) / snr
        loss = (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        running += loss.item()
        if (step + 1) % settings.log_every == 0:
            rate = (time.perf_counter() - clock) / settings.log_every
            log(f"unet step {step + 1}/{settings.unet_steps} loss {running / settings.log_every:.4f} "
                f"({rate:.2f}s/step)")
            running, clock = 0.0, time.perf_counter()
        if checkpoint and settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0:
            checkpoint(step + 1, ema)
    return ema
