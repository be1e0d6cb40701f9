"""Finds the folder a `model` or `vae` value names, and reads the config facts validation needs.

Nothing here loads weights or touches the network: a Hugging Face id is only looked up in the
local cache. Every failure is a `ModelError` whose message names the value, where it was looked
for, and what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gridgen.errors import ModelError
from gridgen.tiny import tiny_folder

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# The components a txt2img Stable Diffusion 1.x/2.x folder must have, and the classes this backend loads.
_EXPECTED = {
    "unet": ("UNet2DConditionModel",),
    "vae": ("AutoencoderKL",),
    "text_encoder": ("CLIPTextModel",),
    "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"),
}


def _pipeline_dir(folder: Path) -> Path | None:
    return folder if (folder / "model_index.json").is_file() else None


def _vae_dir(folder: Path) -> Path | None:
    # An AutoencoderKL folder, or a whole pipeline folder whose VAE is borrowed.
    if (folder / "config.json").is_file():
        return folder
    return folder / "vae" if (folder / "vae" / "config.json").is_file() else None


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _from_hub_cache(repo_id: str, marker: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id, marker)
    except HFValidationError:
        return None
    return Path(found).parent if isinstance(found, str) else None


def _find(what: str, value: str, spec_dir: Path, models_dir: Path | None, subfolder: str,
          accept: Callable[[Path], Path | None], marker: str, kind: str) -> Path:
    """Resolve `value` against the spec folder, the models folder and the HF cache, in that order."""
    raw = Path(value).expanduser()
    if raw.is_absolute():
        candidates = [raw]
    else:
        candidates = [spec_dir / raw]
        for root in ([models_dir, models_dir / subfolder] if models_dir else []):
            candidates += [root / raw, *(root / f"{raw}{suffix}" for suffix in SINGLE_FILE_SUFFIXES)]
    for candidate in candidates:
        if candidate.is_dir():
            found = accept(candidate)
            if found is None:
                raise ModelError(f"{what} {value!r}: {candidate} is a folder but not a diffusers {kind} folder "
                                 f"(no {marker}); point {what} at a diffusers {kind} folder")
            return found.resolve()
        if candidate.is_file():
            if candidate.suffix.lower() in SINGLE_FILE_SUFFIXES:
                raise ModelError(f"{what} {value!r}: {candidate} is a single-file checkpoint, which gridgen cannot "
                                 f"load yet; convert it to a diffusers folder (diffusers' "
                                 f"`from_single_file(...).save_pretrained(DIR)`) and use that folder")
            raise ModelError(f"{what} {value!r}: {candidate} is a file, not a diffusers {kind} folder")
    looked = [str(c) for c in candidates]
    if _HUB_ID.match(value):
        cached = _from_hub_cache(value, marker)
        if cached is not None:
            found = accept(cached)
            if found is not None:
                return found
        looked.append(f"the Hugging Face cache ({_hub_cache_dir()})")
    where = f"{models_dir}" if models_dir else "a models folder"
    raise ModelError(f"{what} {value!r} not found: looked for {', '.join(looked)}; put it in {where} "
                     f"or pass --models-dir / use a diffusers folder path")


@lru_cache(maxsize=256)
def resolve_model(value: str, spec_dir: Path, models_dir: Path | None) -> Path:
    """The diffusers pipeline folder `value` names; raises ModelError."""
    shipped = tiny_folder(value)
    if shipped is not None:
        return shipped
    return _find("model", value, spec_dir, models_dir, "Stable-diffusion", _pipeline_dir, "model_index.json",
                 "Stable Diffusion")


@lru_cache(maxsize=256)
def resolve_vae(value: str, spec_dir: Path, models_dir: Path | None) -> Path | None:
    """The AutoencoderKL folder `value` names, or None for `auto` (the model's own); raises ModelError."""
    if value.strip().lower() == "auto":
        return None
    return _find("vae", value, spec_dir, models_dir, "VAE", _vae_dir, "config.json", "VAE")


@lru_cache(maxsize=64)
def resolve_upscale_pipeline(value: str, spec_dir: Path, models_dir: Path | None) -> Path:
    """The diffusers folder of a diffusion upscaler (the SD x4 upscaler) `value` names; raises ModelError."""
    return _find("upscaler", value, spec_dir, models_dir, "Stable-diffusion", _pipeline_dir, "model_index.json",
                 "upscaler pipeline")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}; re-download or re-convert the model folder") from exc


@dataclass(frozen=True)
class ModelInfo:
    """What a model folder's configs say, without loading weights."""

    path: Path
    vae_factor: int  # pixels per latent cell
    native_size: int  # the side in pixels the UNet was built for
    text_layers: int  # transformer layers in the text encoder, the largest useful clip_skip


def vae_factor(vae_dir: Path) -> int:
    """Pixels per latent cell: the VAE halves the size between each pair of its blocks (SD's has 4 blocks)."""
    return 2 ** (len(_read_json(vae_dir / "config.json").get("block_out_channels", [0] * 4)) - 1)


def _unsupported(path: Path, index: dict[str, Any], unet: dict[str, Any]) -> str | None:
    kind = index.get("_class_name", "diffusers")
    for component, class_names in _EXPECTED.items():
        declared = (index.get(component) or [None, None])[1]
        if declared not in class_names:
            return (f"{path} is a {kind} folder whose {component} is {declared}; gridgen's diffusers backend "
                    f"runs Stable Diffusion 1.x/2.x txt2img models only so far")
    if "text_encoder_2" in index or unet.get("addition_embed_type"):
        return f"{path} is a {kind} folder (SDXL-style, two text encoders); only SD 1.x/2.x is supported so far"
    if unet.get("in_channels", 4) not in (4, 9):
        return (f"{path} has a UNet with {unet.get('in_channels')} input channels (a depth or pix2pix model); "
                f"only txt2img/img2img (4 channels) and inpainting (9 channels) models are supported so far")
    return None


@lru_cache(maxsize=64)
def read_model_info(path: Path) -> ModelInfo:
    """Read a pipeline folder's configs; raises ModelError when they are unreadable or describe a model
    this backend cannot run."""
    index = _read_json(path / "model_index.json")
    unet = _read_json(path / "unet" / "config.json")
    reason = _unsupported(path, index, unet)
    if reason:
        raise ModelError(reason)
    factor = vae_factor(path / "vae")
    text = _read_json(path / "text_encoder" / "config.json")
    return ModelInfo(path=path, vae_factor=factor, native_size=int(unet.get("sample_size", 64)) * factor,
                     text_layers=int(text.get("num_hidden_layers", 12)))
