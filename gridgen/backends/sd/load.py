"""Loads a Stable Diffusion folder's components onto a device, and picks that device and dtype.

Loading never reaches the network (`local_files_only`); a folder that is incomplete or corrupt
becomes a `ModelError` naming the path and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from gridgen.errors import GridError, ModelError

# A progress bar per model load would interleave with the grid's own progress bar.
transformers.utils.logging.disable_progress_bar()

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise GridError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GridError(f"device {name!r} asked for, but this torch sees no CUDA GPU; use --device cpu or auto")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ModelError(f"unknown dtype {name!r}; use one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


@dataclass
class Components:
    """The loaded parts of one txt2img pipeline, plus the scheduler config samplers are built from."""

    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype


def load_components(model: Path, vae: Path | None, device: torch.device, dtype: torch.dtype) -> Components:
    """Load `model` (with `vae` in place of its own, when given); raises ModelError."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from diffusers.utils import is_accelerate_available
    from safetensors import SafetensorError
    from transformers import CLIPTextModel, CLIPTokenizer

    where = vae or model / "vae"
    # diffusers casts its own models (keeping any fp32-only modules); it streams weights only with accelerate.
    diffusers_kwargs = {"dtype": dtype, "local_files_only": True,
                        "low_cpu_mem_usage": is_accelerate_available()}
    try:
        tokenizer = CLIPTokenizer.from_pretrained(model / "tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(model / "text_encoder", local_files_only=True)
        unet = UNet2DConditionModel.from_pretrained(model / "unet", **diffusers_kwargs)
        autoencoder = AutoencoderKL.from_pretrained(where, **diffusers_kwargs)
        # The file's raw dict, keys meant for other schedulers (clip_sample, ...) included; samplers build from it.
        scheduler_config = dict(DDIMScheduler.load_config(model / "scheduler", local_files_only=True))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ModelError(f"cannot load model {model}" + (f" with vae {vae}" if vae else "")
                         + f": {exc}; check that the folder is a complete diffusers Stable Diffusion "
                         f"folder (re-download or re-convert it)") from exc
    # transformers spells its dtype keyword differently across the supported versions, so it is cast here.
    text_encoder.to(device=device, dtype=dtype).eval()
    unet.to(device).eval()
    autoencoder.to(device).eval()
    return Components(tokenizer, text_encoder, unet, autoencoder, scheduler_config, device, dtype)
