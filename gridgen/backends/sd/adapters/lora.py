"""LoRA values: parsing `file[:weight]`, finding the file, checking it before any model loads.

A `lora` value names a .safetensors (or .bin) file, or a folder holding diffusers'
`pytorch_lora_weights.*`: a path (relative to the spec), or a name looked up (with or without its
suffix) in a `loras/` folder next to the spec and in the models folder's `Lora/` (A1111's layout).
The weight after the last colon defaults to 1. Diffusers reads the file (converting A1111/kohya key
names) and PEFT applies it, so the base weights are never changed and switching weights reloads
nothing; `networks.py` does that on the loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gridgen.errors import GridError

SUFFIXES = (".safetensors", ".bin")
DIFFUSERS_NAMES = tuple(f"pytorch_lora_weights{suffix}" for suffix in SUFFIXES)


class LoraError(GridError):
    pass


@dataclass(frozen=True)
class LoraValue:
    name: str  # as written, without the weight
    weight: float


def parse(value: str) -> LoraValue:
    """`name[:weight]`; a colon whose tail is not a number is part of the name (`C:\\loras\\x`)."""
    name, _, tail = value.rpartition(":")
    if name:
        try:
            return LoraValue(name.strip(), float(tail))
        except ValueError:
            pass
    return LoraValue(value.strip(), 1.0)


def folders(spec_dir: Path, models_dir: Path | None) -> list[Path]:
    return [spec_dir / "loras", *([models_dir / "Lora", models_dir / "loras"] if models_dir else [])]


@lru_cache(maxsize=256)
def resolve(name: str, spec_dir: Path, models_dir: Path | None) -> Path:
    """The LoRA file `name` names; raises LoraError saying where it looked."""
    raw = Path(name).expanduser()
    candidates = [raw] if raw.is_absolute() else [spec_dir / raw]
    if not raw.is_absolute():
        for folder in folders(spec_dir, models_dir):
            candidates += [folder / raw, *(folder / f"{raw}{suffix}" for suffix in SUFFIXES)]
    for candidate in candidates:
        if candidate.is_dir():
            for weights in DIFFUSERS_NAMES:
                if (candidate / weights).is_file():
                    return (candidate / weights).resolve()
            raise LoraError(f"lora {name!r}: {candidate} is a folder without {' or '.join(DIFFUSERS_NAMES)}; "
                            f"point lora at the LoRA file")
        if candidate.is_file():
            return candidate.resolve()
    raise LoraError(f"lora {name!r} not found: looked for {', '.join(str(c) for c in candidates)}; put the file in "
                    f"{folders(spec_dir, models_dir)[-1]} or give its path")


@lru_cache(maxsize=256)
def _keys(path: Path, modified: float) -> tuple[str, ...] | str:
    """The tensor names in a .safetensors file's header, or why it cannot be read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return tuple(handle.keys())
    except Exception as exc:  # safetensors raises its own error types and OSError
        return f"cannot read LoRA file {path}: {exc}; re-download it"


@lru_cache(maxsize=256)
def _pickled_keys(path: Path, modified: float) -> tuple[str, ...] | str:
    """The tensor names in a .bin file, read with torch's weights-only loader (it runs no code from the file)."""
    import torch

    try:
        state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for a file that is not weights
        return f"cannot read LoRA file {path} as weights ({type(exc).__name__}); re-download it"
    return tuple(str(key) for key in state) if isinstance(state, dict) else f"{path} holds no named weights"


def _header(path: Path) -> tuple[str, ...] | str | None:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        return f"lora file {path} is not a {' or '.join(SUFFIXES)} file; lora takes LoRA weights in those formats"
    reader = _keys if suffix == ".safetensors" else _pickled_keys
    return reader(path, path.stat().st_mtime)


def problem(path: Path) -> str | None:
    """Why the file at `path` cannot be a LoRA, judged from its header alone; None when it looks fine."""
    keys = _header(path)
    if isinstance(keys, str):
        return keys
    if keys is not None and not any("lora" in key.lower() for key in keys):
        return (f"{path} holds no LoRA weights (no key names 'lora'); is it a full checkpoint or another kind of "
                f"network? lora takes LoRA files in diffusers or A1111/kohya format")
    return None

