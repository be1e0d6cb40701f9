"""The file format of the stage cache's spilled entries: safetensors, which holds data and cannot run code.

The output folder (and its `.cache/`) may be shared, so a spilled entry must not be a pickle: reading
one back must never execute what someone else wrote there. An entry is stage output: tensors, numpy
arrays and PIL images, inside tuples, lists and dicts, with plain text and numbers beside them. The
arrays go into the safetensors file as tensors; the structure around them is JSON in the file's
metadata. `encode` returns None for a value holding anything else, which is then not spilled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_STRUCTURE = "gridgen.structure"


class _Unsupported(Exception):
    pass


def _pack(value: Any, tensors: dict[str, Any]) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = value.detach().cpu().contiguous().clone()
        return {"tensor": name}
    if isinstance(value, np.ndarray):
        return {"array": _pack(torch.from_numpy(np.array(value, order="C")), tensors)["tensor"]}
    if isinstance(value, Image.Image):
        return {"image": _pack(np.array(value), tensors)["array"], "mode": value.mode}
    if isinstance(value, tuple | list):
        return {"tuple" if isinstance(value, tuple) else "list": [_pack(item, tensors) for item in value]}
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"dict": {key: _pack(item, tensors) for key, item in value.items()}}
    raise _Unsupported(type(value).__name__)


def _unpack(packed: Any, tensors: dict[str, Any]) -> Any:
    from PIL import Image

    if not isinstance(packed, dict):
        return packed
    if "tensor" in packed:
        return tensors[packed["tensor"]]
    if "array" in packed:
        return tensors[packed["array"]].numpy()
    if "image" in packed:
        return Image.fromarray(tensors[packed["image"]].numpy(), packed["mode"])
    if "tuple" in packed:
        return tuple(_unpack(item, tensors) for item in packed["tuple"])
    if "list" in packed:
        return [_unpack(item, tensors) for item in packed["list"]]
    return {key: _unpack(item, tensors) for key, item in packed["dict"].items()}


def encode(value: Any) -> bytes | None:
    """The safetensors bytes of a stage output, or None when it holds something this format does not keep."""
    from safetensors.torch import save

    tensors: dict[str, Any] = {}
    try:
        structure = _pack(value, tensors)
    except _Unsupported:
        return None
    return save(tensors, metadata={_STRUCTURE: json.dumps(structure)})


def decode(path: Path) -> Any:
    """The stage output `encode` wrote to `path`; raises ValueError for a file that is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            structure = json.loads((handle.metadata() or {})[_STRUCTURE])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        return _unpack(structure, tensors)
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise ValueError(f"{path} is not a stage cache file: {err}") from None
