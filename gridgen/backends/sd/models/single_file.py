"""Loads the components of an A1111-style single-file checkpoint through diffusers' own converters.

The weights come from `checkpoint.load_state_dict` (never unpickling code), the configs from the
shipped family folder `families.detect_family` picked, and the tokenizer vocabulary from
`vocab.tokenizer_files`; diffusers converts the original LDM layout with `local_files_only`, so
nothing here reaches the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from gridgen.backends.sd.models.checkpoint import load_state_dict
from gridgen.backends.sd.models.vocab import tokenizer_files


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    """diffusers' single-file loader casts with `.to(dtype)`, which logs a warning about fp32 modules on
    every load even when there are none; a grid run would print it per model."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def load_tokenizer(config: Path, subfolder: str):
    """A CLIPTokenizer with CLIP's vocabulary and the family's settings (length, pad token)."""
    from transformers import CLIPTokenizer

    settings = json.loads((config / subfolder / "tokenizer_config.json").read_text(encoding="utf-8"))
    settings.pop("tokenizer_class", None)
    files = tokenizer_files()
    return CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"), **settings)


def _text_encoder(cls, state: dict[str, torch.Tensor], config: Path, subfolder: str, dtype: torch.dtype):
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    return create_diffusers_clip_model_from_ldm(cls, state, subfolder=subfolder, config=str(config),
                                                torch_dtype=dtype, local_files_only=True)


def load_single_file(path: Path, config: Path, dtype: torch.dtype) -> dict[str, Any]:
    """The tokenizer(s), text encoder(s), UNet and VAE of the checkpoint at `path`, on the CPU."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    state = load_state_dict(path)
    options = {"config": str(config), "local_files_only": True, "torch_dtype": dtype}
    with quiet_diffusers():
        parts = {
            "tokenizer": load_tokenizer(config, "tokenizer"),
            "text_encoder": _text_encoder(CLIPTextModel, state, config, "text_encoder", dtype),
            "unet": UNet2DConditionModel.from_single_file(state, subfolder="unet", **options),
            "vae": AutoencoderKL.from_single_file(state, subfolder="vae", **options),
        }
    if (config / "text_encoder_2").is_dir():
        parts["tokenizer_2"] = load_tokenizer(config, "tokenizer_2")
        parts["text_encoder_2"] = _text_encoder(CLIPTextModelWithProjection, state, config, "text_encoder_2", dtype)
    return parts


def load_vae_file(path: Path, config: Path, dtype: torch.dtype):
    """A VAE from a single file (bare or inside a checkpoint), configured as the model's own VAE."""
    from diffusers import AutoencoderKL

    state = load_state_dict(path)
    with quiet_diffusers():
        return AutoencoderKL.from_single_file(state, config=str(config), subfolder="vae", local_files_only=True,
                                              torch_dtype=dtype)
