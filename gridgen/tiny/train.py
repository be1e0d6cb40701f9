"""Trains the gridgen-tiny model family on the procedural shapes data set: `python -m gridgen.tiny.train`.

`--variant txt2img` trains, from nothing, the three parts of a Stable Diffusion 1.x folder, shrunk
until they train on a 2-core CPU in well under an hour:

1. an `AutoencoderKL` (factor 4: 64 px images <-> 4x16x16 latents), on freshly drawn images;
2. with the VAE frozen, a pool of latents is encoded once, and a `UNet2DConditionModel` (4 input
   channels, epsilon prediction on SD's noise schedule) learns to denoise them, conditioned by a
   `CLIPTextModel` trained with it; 10% of the captions are dropped to the empty prompt so
   classifier-free guidance works. The UNet and text encoder saved are an EMA of their weights.

The tokenizer is a word-level `CLIPTokenizer`: its BPE merges join every grammar word into one
token. Everything is drawn from `--seed`, so a run is repeatable on the same machine; the defaults
are the settings that made the shipped weights (about 45 minutes on a busy 2-core CPU, one
thread). CUDA is used when present. The UNet's learning rate is constant after warmup, so the
checkpoint a longer run writes at step N (`--checkpoint-every`) is exactly what `--steps N` gives.

`--variant inpaint`, `x4` and `sam` train the companions from the shipped txt2img folder (see
`gridgen.tiny.inpaint`, `gridgen.tiny.upscaler`, `gridgen.tiny.sam`), each with its own defaults.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gridgen.fsutil import replace_dir
from gridgen.tiny import TINY_MODEL_DIR, TINY_VARIANT_DIRS
from gridgen.tiny import data as shapes

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 16  # the longest grammar caption is 9 tokens with its start and end tokens
TEXT_HIDDEN = 64
VARIANTS = ("txt2img", "inpaint", "x4", "sam")
# SD 1.x's noise schedule, written as the folder's scheduler config. The DDIM/PNDM keys ride along
# (diffusers keeps them as hidden config) so those samplers get SD's settings when built from it.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1,
    "interpolation_type": "linear", "use_karras_sigmas": False,
    "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True,
}


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


# Tokenizer


def _bpe_pieces(word: str, merges: list[tuple[str, str]]) -> list[str]:
    """How CLIP's BPE splits `word` with `merges` (lowest rank first, as the tokenizers library does)."""
    rank = {pair: i for i, pair in enumerate(merges)}
    symbols = [*word[:-1], word[-1] + "</w>"]
    while len(symbols) > 1:
        best = min(range(len(symbols) - 1), key=lambda i: rank.get((symbols[i], symbols[i + 1]), math.inf))
        if (symbols[best], symbols[best + 1]) not in rank:
            break
        symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
    return symbols


def word_level_vocab(words: tuple[str, ...] = shapes.GRAMMAR_WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP BPE vocabulary and merge list under which each of `words` is exactly one token.

    A word's merges are appended after the earlier words' ones, joining whatever pieces the earlier
    merges leave, so they never change how an earlier word splits. Characters outside the grammar's
    words are not in the vocabulary and become the unknown token.
    """
    tokens = [BOS, EOS]
    merges: list[tuple[str, str]] = []
    for word in words:
        for symbol in [*word[:-1], word[-1] + "</w>"]:
            if symbol not in tokens:
                tokens.append(symbol)
    for word in words:
        pieces = _bpe_pieces(word, merges)
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            pieces[:2] = [pieces[0] + pieces[1]]
            if pieces[0] not in tokens:
                tokens.append(pieces[0])
    return {token: i for i, token in enumerate(tokens)}, merges


def write_tokenizer_files(folder: Path) -> None:
    """vocab.json and merges.txt, which CLIPTokenizer reads when tokenizer.json is absent (transformers 4.x)."""
    vocab, merges = word_level_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def build_tokenizer(workdir: Path):
    from transformers import CLIPTokenizer

    write_tokenizer_files(workdir)
    tokenizer = CLIPTokenizer.from_pretrained(workdir, model_max_length=MAX_TOKENS)
    for word in shapes.GRAMMAR_WORDS:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert ids == [tokenizer.convert_tokens_to_ids(word + "</w>")], f"{word!r} is not one token: {ids}"
    return tokenizer


# Models


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_HIDDEN, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))


def build_vae():
    from diffusers import AutoencoderKL

    # Factor 4 (three blocks): 64 px images have 16x16 latents, room enough to draw a 16 px shape.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), norm_num_groups=8, mid_block_add_attention=False,
    )


def build_unet(in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    # 16x16 -> 8x8 -> 4x4; attention (self and cross) at 8x8 and 4x4, where it is cheap.
    return UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN, attention_head_dim=32, norm_num_groups=8,
    )


# Training helpers


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


def widen_unet(source, in_channels: int, **changes):
    """A UNet with `source`'s weights and `in_channels` inputs; the added input channels start at zero,
    so training starts from exactly `source`'s predictions. `changes` override config entries."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config({**source.config, "in_channels": in_channels, **changes})
    state = {k: v for k, v in source.state_dict().items() if k != "conv_in.weight"}
    unet.load_state_dict(state, strict=False)
    with torch.no_grad():
        unet.conv_in.weight.zero_()
        unet.conv_in.weight[:, :source.config.in_channels] = source.conv_in.weight
    return unet


def load_txt2img(folder: Path = TINY_MODEL_DIR):
    """(tokenizer, text encoder, vae, unet) of a trained txt2img folder, in fp32, frozen."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    parts = (CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32),
             AutoencoderKL.from_pretrained(folder / "vae", dtype=torch.float32),
             UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32))
    return tokenizer, *(part.eval().requires_grad_(False) for part in parts)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """Scaled latent means of (n, 3, H, W) images in [-1, 1], on the VAE's device."""
    return vae.encode(images.to(vae.device)).latent_dist.mean * vae.config.scaling_factor


# Saving


def save_txt2img(out: Path, tokenizer, text_encoder, unet, vae) -> Path:
    from diffusers import StableDiffusionPipeline

    return save_variant(StableDiffusionPipeline, out, tokenizer=tokenizer, text_encoder=text_encoder, unet=unet,
                        vae=vae, requires_safety_checker=False)


def save_variant(pipeline_class, out: Path, *, tokenizer, text_encoder, unet, vae, **extra) -> Path:
    """Write a `pipeline_class` folder to `out`, replacing it; `extra` are the class's other arguments.

    The UNet and VAE are stored in fp16 (diffusers loads them in the dtype asked for); the text
    encoder stays fp32, since transformers would otherwise load it, and run it, in fp16. The modules
    passed in are copied, never changed.
    """
    from diffusers import EulerDiscreteScheduler

    pipe = pipeline_class(
        vae=copy.deepcopy(vae).cpu().half(), text_encoder=copy.deepcopy(text_encoder).cpu().float(),
        tokenizer=tokenizer, unet=copy.deepcopy(unet).cpu().half(),
        scheduler=EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, **extra,
    )
    return save_pipeline(pipe, out)


def save_pipeline(pipe, out: Path) -> Path:
    """`pipe.save_pretrained` into `out`, replacing it in one rename, with the word-level tokenizer files."""
    with replace_dir(Path(out)) as staged:
        pipe.save_pretrained(staged, safe_serialization=True)
        write_tokenizer_files(staged / "tokenizer")
    return Path(out)


def train_txt2img(out: Path, settings: Settings, device: torch.device, log: Logger) -> None:
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


def variant_trainers() -> dict[str, tuple[Callable, dict]]:
    """Each variant's training function and the settings it changes from `Settings`' defaults."""
    from gridgen.tiny import inpaint, sam, upscaler

    return {"txt2img": (train_txt2img, {}), "inpaint": (inpaint.train, inpaint.DEFAULTS),
            "x4": (upscaler.train, upscaler.DEFAULTS), "sam": (sam.train, sam.DEFAULTS)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, default="txt2img")
    parser.add_argument("--out", type=Path, help="folder to write (default: the variant's folder in the package)")
    for field in fields(Settings):
        flags = ["--" + field.name.replace("_", "-")] + (["--steps"] if field.name == "unet_steps" else [])
        parser.add_argument(*flags, dest=field.name, type=type(field.default),
                            help=f"(default: {field.default}, or the variant's own)")
    # One thread by default: on a busy shared CPU a second thread mostly waits at torch's barriers
    # (ten times slower here), and the shipped weights were made with one, which float sums depend on.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    trainer, variant_defaults = variant_trainers()[args.variant]
    given = {f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name) is not None}
    settings = Settings(**{**variant_defaults, **given})
    out = args.out or TINY_VARIANT_DIRS[args.variant]
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    log, device = Logger(), pick_device()
    log(f"{args.variant} on {device}: {json.dumps(asdict(settings))}")
    trainer(out, settings, device, log)
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    log(f"wrote {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
