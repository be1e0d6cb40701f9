"""Reads A1111-style single-file checkpoints (`.safetensors`, `.ckpt`) without executing pickled code.

`read_shapes` gives every tensor's name and shape cheaply (the safetensors header, or a memory-mapped
weights-only unpickling of a `.ckpt`), which is all detection and validation need; `load_state_dict`
reads the tensors themselves. A `.ckpt` is only ever opened with `torch.load(weights_only=True)`:
a file that needs arbitrary pickled objects is refused with a message saying what to do.
"""

from __future__ import annotations

import pickle
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from gridgen.errors import ModelError

if TYPE_CHECKING:
    import torch

SAFETENSORS = ".safetensors"
SINGLE_FILE_SUFFIXES = (SAFETENSORS, ".ckpt")


def _unwrap(checkpoint: dict) -> dict:
    # Training checkpoints keep the weights under "state_dict" next to optimizer state and counters.
    while isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    return checkpoint


def _torch_load(path: Path, mmap: bool) -> dict:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # torch's message is long advice about weights_only=False; the object it refused is what matters.
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"it pickles a {refused[1]} object" if refused else "it holds more than tensors"
        raise ModelError(f"{path} refuses to load as plain weights ({what}); gridgen never runs code pickled "
                         f"inside a checkpoint. Use a .safetensors version of the model, or convert this file "
                         f"with a tool you trust") from exc
    if not isinstance(loaded, dict):
        raise ModelError(f"{path} holds a {type(loaded).__name__}, not a state dict of weights; "
                         f"it is not a Stable Diffusion checkpoint")
    return _unwrap(loaded)


def _read_ckpt(path: Path, mmap: bool) -> dict:
    try:
        return _torch_load(path, mmap)
    except ModelError:
        raise
    except RuntimeError as exc:
        if mmap and "mmap" in str(exc):  # the legacy (pre-zip) format cannot be memory-mapped
            return _read_ckpt(path, mmap=False)
        raise _corrupt(path, exc) from exc
    except (OSError, EOFError, ValueError) as exc:
        raise _corrupt(path, exc) from exc


def _corrupt(path: Path, exc: Exception) -> ModelError:
    return ModelError(f"cannot read checkpoint {path}: {exc}; the file is damaged or not a checkpoint "
                      f"(re-download it)")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, exc) from exc


@lru_cache(maxsize=32)
def _shapes(path: Path, _mtime_ns: int, _size: int) -> dict[str, tuple[int, ...]]:
    import torch

    if path.suffix.lower() == SAFETENSORS:
        return _safetensors_shapes(path)
    return {key: tuple(value.shape) for key, value in _read_ckpt(path, mmap=True).items()
            if isinstance(value, torch.Tensor)}


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's name and shape, without reading the weights; raises ModelError."""
    stat = path.stat()
    return _shapes(path, stat.st_mtime_ns, stat.st_size)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a single-file checkpoint, on the CPU; raises ModelError."""
    import torch

    if path.suffix.lower() == SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise _corrupt(path, exc) from exc
    return {key: value for key, value in _read_ckpt(path, mmap=True).items() if isinstance(value, torch.Tensor)}
