"""Finds the folder or single file a `model` or `vae` value names, and reads the config facts
validation needs.

Nothing here loads weights or touches the network: a Hugging Face id is only looked up in the
local cache, and a single-file checkpoint is read for its tensor names and shapes only (the config
family that fits comes from `families`). Every failure is a `ModelError` whose message names the
value, where it was looked for, and what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gridgen.backends.sd.models.checkpoint import SINGLE_FILE_SUFFIXES, read_shapes
from gridgen.backends.sd.models.families import UNET_INPUT, detect_family
from gridgen.errors import ModelError
from gridgen.tiny import tiny_folder

# A1111 also takes `.pt` VAE files (`*.vae.pt`); they are read weights-only like a `.ckpt`.
VAE_SUFFIXES = (*SINGLE_FILE_SUFFIXES, ".pt")
# A1111 titles a checkpoint "name.safetensors [a1b2c3d4e5]"; specs copied from it carry the short hash.
_A1111_HASH = re.compile(r"\s*\[[0-9a-fA-F]{8,10}\]$")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# The components a Stable Diffusion 1.x/2.x/XL folder must have, and the classes this backend loads.
_EXPECTED = {
    "unet": ("UNet2DConditionModel",),
    "vae": ("AutoencoderKL",),
    "text_encoder": ("CLIPTextModel",),
    "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"),
}
# SDXL's second text encoder, when a folder has one.
_SECOND_ENCODER = {"text_encoder_2": ("CLIPTextModelWithProjection",), "tokenizer_2": _EXPECTED["tokenizer"]}
# What an unCLIP image-variation folder has beyond a Stable Diffusion one: the part and the config file it holds.
UNCLIP_PIPELINE = "StableUnCLIPImg2ImgPipeline"
_UNCLIP_PARTS = {"feature_extractor": "preprocessor_config.json", "image_encoder": "config.json",
                 "image_normalizer": "config.json", "image_noising_scheduler": "scheduler_config.json"}
# A VAE file's decoder input, bare (a VAE file) or inside a full checkpoint.
_VAE_KEYS = ("decoder.conv_in.weight", "first_stage_model.decoder.conv_in.weight")


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


def find(what: str, value: str, spec_dir: Path, models_dir: Path | None, subfolder: str,
          accept: Callable[[Path], Path | None], marker: str, kind: str,
          suffixes: tuple[str, ...] = SINGLE_FILE_SUFFIXES) -> Path:
    """Resolve `value` against the spec folder, the models folder (and, as A1111 scans it, the subfolders of
    its `subfolder`) and the HF cache, in that order. `accept` maps a folder to what it holds (None: not a
    {kind} folder); files are accepted by their `suffixes` (none: folders only). Raises ModelError."""
    raw = Path(_A1111_HASH.sub("", value)).expanduser()
    if raw.is_absolute():
        candidates = [raw]
    else:
        candidates = [spec_dir / raw]
        for root in ([models_dir, models_dir / subfolder] if models_dir else []):
            candidates += [root / raw, *(root / f"{raw}{suffix}" for suffix in suffixes)]
        if models_dir and (models_dir / subfolder).is_dir():
            candidates += sorted(found for suffix in ("", *suffixes)
                                 for found in (models_dir / subfolder).rglob(f"{raw.name}{suffix}"))
    for candidate in candidates:
        if candidate.is_dir():
            found = accept(candidate)
            if found is None:
                raise ModelError(f"{what} {value!r}: {candidate} is a folder but not a {kind} folder "
                                 f"(no {marker}); point {what} at a {kind} folder")
            return found.resolve()
        if candidate.is_file():
            if candidate.suffix.lower() in suffixes:
                return candidate.resolve()
            accepted = f"neither a {kind} folder nor a {' or '.join(suffixes)} checkpoint" if suffixes \
                else f"not a {kind} folder"
            raise ModelError(f"{what} {value!r}: {candidate} is a file, {accepted}")
    looked = [str(c) for c in candidates]
    if models_dir:
        looked.append(f"the subfolders of {models_dir / subfolder}")
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
    """The diffusers pipeline folder or single-file checkpoint `value` names; raises ModelError."""
    shipped = tiny_folder(value)
    if shipped is not None:
        return shipped
    return find("model", value, spec_dir, models_dir, "Stable-diffusion", _pipeline_dir, "model_index.json",
                "diffusers Stable Diffusion")


@lru_cache(maxsize=256)
def resolve_vae(value: str, spec_dir: Path, models_dir: Path | None) -> Path | None:
    """The AutoencoderKL folder or VAE file `value` names, or None for `auto` (the model's own); raises ModelError."""
    if value.strip().lower() == "auto":
        return None
    found = find("vae", value, spec_dir, models_dir, "VAE", _vae_dir, "config.json", "diffusers VAE",
                VAE_SUFFIXES)
    if found.is_file() and not any(key in read_shapes(found) for key in _VAE_KEYS):
        raise ModelError(f"vae {value!r}: {found} holds no VAE decoder weights ({_VAE_KEYS[0]}); "
                         f"point vae at a VAE file or folder")
    return found


@lru_cache(maxsize=64)
def resolve_upscale_pipeline(value: str, spec_dir: Path, models_dir: Path | None) -> Path:
    """The diffusers folder of a diffusion upscaler (the SD x4 upscaler) `value` names; raises ModelError."""
    shipped = tiny_folder(value)
    if shipped is not None:
        return shipped
    return find("upscaler", value, spec_dir, models_dir, "Stable-diffusion", _pipeline_dir, "model_index.json",
                "diffusers upscaler pipeline")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}; re-download or re-convert the model folder") from exc


@dataclass(frozen=True)
class ModelInfo:
    """What a model's configs (and, for a single file, its tensor shapes) say, without loading weights."""

    path: Path
    vae_factor: int  # pixels per latent cell
    native_size: int  # the side in pixels the UNet was built for
    text_layers: int  # transformer layers in the text encoder, the largest useful clip_skip
    in_channels: int  # the UNet's input channels, which tell the pipeline kind
    sdxl: bool  # two text encoders and size conditioning
    config: Path  # the diffusers folder whose configs describe it: the folder itself, or a shipped family
    unclip: bool = False  # a 4-channel UNet that also reads a CLIP image embedding (SD 2.1 unCLIP)


def vae_factor(vae_dir: Path) -> int:
    """Pixels per latent cell: the VAE halves the size between each pair of its blocks (SD's has 4 blocks)."""
    return 2 ** (len(_read_json(vae_dir / "config.json").get("block_out_channels", [0] * 4)) - 1)


def _unsupported(path: Path, index: dict[str, Any]) -> str | None:
    kind = index.get("_class_name", "diffusers")
    expected = {**_EXPECTED, **{name: classes for name, classes in _SECOND_ENCODER.items() if name in index}}
    for component, class_names in expected.items():
        declared = (index.get(component) or [None, None])[1]
        if declared not in class_names:
            return (f"{path} is a {kind} folder whose {component} is {declared}; gridgen's diffusers backend "
                    f"runs Stable Diffusion 1.x, 2.x and XL models")
    return None


# Weight files diffusers and transformers read, whole or sharded; half-precision variants count too.
_WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))


def _is_unclip(path: Path, index: dict[str, Any], unet: dict[str, Any]) -> bool:
    """Whether a folder is an unCLIP image-variation model; raises ModelError for a UNet that reads image
    embeddings from a folder with nothing to make them from (diffusers' text-to-image unCLIP)."""
    projection = unet.get("class_embed_type") == "projection"
    encoder_parts = ("image_encoder", "image_normalizer", "image_noising_scheduler")
    if index.get("_class_name") == UNCLIP_PIPELINE or projection and all((path / p).is_dir() for p in encoder_parts):
        return True
    if projection:
        raise ModelError(f"model {path}: its UNet reads a CLIP image embedding (class_embed_type projection) but the "
                         f"folder has no {' + '.join(encoder_parts)} to make one; gridgen runs unCLIP models as "
                         f"image variations ({UNCLIP_PIPELINE} folders, such as SD 2.1 unCLIP)")
    return False


def _missing_file(path: Path, index: dict[str, Any], unclip: bool = False) -> str | None:
    """The first file a folder needs but lacks (an interrupted download or copy), or None."""
    for part, config in _UNCLIP_PARTS.items() if unclip else ():
        if not (path / part / config).is_file():
            return str(path / part / config)
    weighted = ("image_encoder", "image_normalizer") if unclip else ()
    for component in ("unet", "vae", "text_encoder", "text_encoder_2", *weighted):
        if component not in index:
            continue
        folder = path / component
        if not (folder / "config.json").is_file():
            return str(folder / "config.json")
        if not any(any(folder.glob(pattern)) for pattern in _WEIGHTS):
            return f"{folder}/ weights ({' or '.join(_WEIGHTS[:2])})"
    for component in ("tokenizer", "tokenizer_2"):
        if component in index and not any(all((path / component / name).is_file() for name in names)
                                           for names in _TOKENIZER_FILES):
            return f"{path / component}/ vocabulary (vocab.json and merges.txt, or tokenizer.json)"
    return None


def _info(path: Path, config: Path, in_channels: int, unclip: bool = False) -> ModelInfo:
    unet = _read_json(config / "unet" / "config.json")
    factor = vae_factor(config / "vae")
    text = _read_json(config / "text_encoder" / "config.json")
    return ModelInfo(path=path, vae_factor=factor, native_size=int(unet.get("sample_size", 64)) * factor,
                     text_layers=int(text.get("num_hidden_layers", 12)), in_channels=in_channels,
                     sdxl=(config / "text_encoder_2").is_dir(), config=config, unclip=unclip)


@lru_cache(maxsize=64)
def read_model_info(path: Path, prediction: str = "auto") -> ModelInfo:
    """Read a pipeline folder's configs, or a single file's shapes and the shipped configs that fit them;
    raises ModelError when they are unreadable or describe a model this backend cannot run.
    `prediction` (the param) picks between SD 2.x single-file configs that the weights cannot tell apart."""
    if path.is_file():
        shapes = read_shapes(path)
        return _info(path, detect_family(path, shapes, prediction), shapes.get(UNET_INPUT, (0, 4))[1])
    index = _read_json(path / "model_index.json")
    reason = _unsupported(path, index)
    if reason:
        raise ModelError(reason)
    unet_config = path / "unet" / "config.json"
    unet = _read_json(unet_config) if unet_config.is_file() else {}  # a missing one is reported as missing
    unclip = _is_unclip(path, index, unet)
    missing = _missing_file(path, index, unclip)
    if missing:
        where = "this Hugging Face cache snapshot" if _hub_cache_dir() in str(path) else "the folder"
        raise ModelError(f"model {path} is incomplete: {missing} is missing; {where} was not fully downloaded or "
                         f"copied (gridgen never downloads: fetch it again while online, then run offline)")
    return _info(path, path, int(unet.get("in_channels", 4)), unclip)
