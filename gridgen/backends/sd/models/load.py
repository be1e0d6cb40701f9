"""Loads a Stable Diffusion model's components onto a device, and picks that device and dtype.

A model is a diffusers folder or a single-file checkpoint (`single_file`); a VAE is either too.
Loading never reaches the network (`local_files_only`); a model that is incomplete or corrupt
becomes a `ModelError` naming the path and what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from gridgen.backends.sd.models.single_file import load_single_file, load_vae_file, quiet_diffusers
from gridgen.backends.sd.stages.x4 import X4_IN_CHANNELS
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
    """The loaded parts of one pipeline, plus the scheduler config samplers are built from.

    SDXL models have a second tokenizer and text encoder (with projection); the others have None there.
    """

    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    tokenizer_2: Any = None
    text_encoder_2: Any = None
    # SDXL: an empty negative prompt conditions with zeros, as the pipeline config's force_zeros_for_empty_prompt
    # says (true for SDXL base) and as diffusers and A1111 do.
    zero_empty_negative: bool = False

    def modules(self) -> list[Any]:
        return [m for m in (self.text_encoder, self.text_encoder_2, self.unet, self.vae) if m is not None]


def _load_folder(model: Path, dtype: torch.dtype, diffusers_kwargs: dict[str, Any]) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    parts = {
        "tokenizer": CLIPTokenizer.from_pretrained(model / "tokenizer", local_files_only=True),
        "text_encoder": CLIPTextModel.from_pretrained(model / "text_encoder", local_files_only=True),
        "unet": UNet2DConditionModel.from_pretrained(model / "unet", **diffusers_kwargs),
        "vae": AutoencoderKL.from_pretrained(model / "vae", **diffusers_kwargs),
    }
    if (model / "text_encoder_2").is_dir():
        parts["tokenizer_2"] = CLIPTokenizer.from_pretrained(model / "tokenizer_2", local_files_only=True)
        parts["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(model / "text_encoder_2",
                                                                              local_files_only=True)
    return parts


def _pipeline_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def load_components(model: Path, vae: Path | None, device: torch.device, dtype: torch.dtype,
                    config: Path | None = None) -> Components:
    """Load `model` (with `vae` in place of its own, when given); raises ModelError.

    `config` is the diffusers folder whose configs describe `model` (locate's ModelInfo.config): the
    folder itself, or for a single file the shipped family folder, which a VAE file is configured from too.
    """
    from diffusers import AutoencoderKL, DDIMScheduler
    from diffusers.utils import is_accelerate_available
    from safetensors import SafetensorError

    config = config or model
    # diffusers casts its own models (keeping any fp32-only modules); it streams weights only with accelerate.
    diffusers_kwargs = {"dtype": dtype, "local_files_only": True,
                        "low_cpu_mem_usage": is_accelerate_available()}
    try:
        parts = load_single_file(model, config, dtype) if model.is_file() else _load_folder(model, dtype,
                                                                                             diffusers_kwargs)
        if vae is not None and vae.is_file():
            parts["vae"] = load_vae_file(vae, config, dtype)
        elif vae is not None:
            parts["vae"] = AutoencoderKL.from_pretrained(vae, **diffusers_kwargs)
        # The file's raw dict, keys meant for other schedulers (clip_sample, ...) included; samplers build from it.
        scheduler_config = dict(DDIMScheduler.load_config(config / "scheduler", local_files_only=True))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        what = "a complete diffusers Stable Diffusion folder" if model.is_dir() else "a whole SD checkpoint"
        raise ModelError(f"cannot load model {model}" + (f" with vae {vae}" if vae else "")
                         + f": {exc}; check that it is {what} (re-download or re-convert it)") from exc
    components = Components(scheduler_config=scheduler_config, device=device, dtype=dtype, **parts)
    if components.text_encoder_2 is not None:
        components.zero_empty_negative = bool(_pipeline_config(config).get("force_zeros_for_empty_prompt", True))
    for encoder in (components.text_encoder, components.text_encoder_2):
        # transformers spells its dtype keyword differently across the supported versions, so it is cast here.
        if encoder is not None:
            encoder.to(device=device, dtype=dtype)
    for module in components.modules():
        module.to(device).eval()
    # SDXL's and the x4 upscaler's VAEs overflow in fp16; like diffusers, only their pipelines honour the config's
    # force_upcast.
    x4_upscaler = components.unet.config.in_channels == X4_IN_CHANNELS
    upcast = ((components.text_encoder_2 is not None or x4_upscaler)
              and getattr(components.vae.config, "force_upcast", False))
    if upcast and components.vae.dtype != torch.float32:
        with quiet_diffusers():
            components.vae.to(torch.float32)
    return components
