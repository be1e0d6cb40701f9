"""Builds the `gridgen-tiny` Stable Diffusion folder from a fixed seed: `python -m gridgen.tiny.build`.

The components are the real diffusers/transformers classes an SD 1.x checkpoint uses, shrunk until
the whole folder is commit-sized, with random weights. The tokenizer is character-level and its
vocabulary is written here, so any prompt tokenizes without a downloaded vocabulary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from gridgen.tiny import TINY_MODEL_DIR

SEED = 20240601
TEXT_HIDDEN = 32
MAX_TOKENS = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_level_chars() -> list[str]:
    """The 256 printable characters byte-level BPE uses to stand for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    shift = 0
    for byte in range(256):
        if byte not in printable:
            # bytes without a printable glyph are mapped past 255, in byte order
            chars.append(256 + shift)
            shift += 1
    return [chr(code) for code in chars]


def write_tokenizer_files(folder: Path) -> int:
    """Write a character-level vocab.json and an empty merges.txt; returns the vocabulary size."""
    chars = byte_level_chars()
    tokens = [*chars, *(c + "</w>" for c in chars), BOS, EOS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(tokens)


def build_pipeline(workdir: Path):
    """The tiny txt2img pipeline, its weights drawn from `SEED`."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_size = write_tokenizer_files(workdir)
    tokenizer = CLIPTokenizer.from_pretrained(workdir, model_max_length=MAX_TOKENS)

    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_HIDDEN,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    torch.manual_seed(SEED + 1)
    # VAE factor 4: 64 px images have 16x16 latents, enough room for a trained tiny model to draw shapes.
    # Channel counts are the largest that keep the whole folder under 3 MB in fp32.
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 16, 16), norm_num_groups=8,
    )
    torch.manual_seed(SEED + 2)
    # Cross-attention in the high-resolution blocks, as in SD 1.x.
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 48),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN, attention_head_dim=8, norm_num_groups=8,
    )
    # SD 1.x's noise schedule; the DDIM/PNDM keys ride along (diffusers keeps them as hidden config)
    # so those samplers get SD's settings when built from this config.
    scheduler = EulerDiscreteScheduler.from_config({
        "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1,
        "interpolation_type": "linear", "use_karras_sigmas": False,
        "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True,
    })
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build(out: Path = TINY_MODEL_DIR) -> Path:
    """Write the tiny model to `out`, replacing what is there; returns `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / "model"
        build_pipeline(Path(tmp) / "tokenizer-src").save_pretrained(staged, safe_serialization=True)
        # transformers 4.x's CLIPTokenizer reads these instead of tokenizer.json
        write_tokenizer_files(staged / "tokenizer")
        for path in staged.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TINY_MODEL_DIR, help="folder to write (default: %(default)s)")
    out = build(parser.parse_args(argv).out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
