"""Finds and loads upscaler model files (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, Compact, ...) through spandrel.

A file is resolved against the spec folder, then the models folder and its `ESRGAN/` and
`upscale_models/` subfolders (A1111's and ComfyUI's places). Loaded models are kept per (path,
modification time), so validation's load is the one rendering uses and an edited file is reread.
Every failure is a `ModelError` naming the file and what to do.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from functools import lru_cache
from pathlib import Path

from gridgen.errors import ModelError

_SUBFOLDERS = ("ESRGAN", "upscale_models", "RealESRGAN")


def resolve_upscaler_file(value: str, spec_dir: Path, models_dir: Path | None) -> Path:
    """The model file an `upscaler` value names; raises ModelError listing where it looked."""
    raw = Path(value).expanduser()
    if raw.is_absolute():
        candidates = [raw]
    else:
        candidates = [spec_dir / raw]
        for root in [models_dir, *(models_dir / sub for sub in _SUBFOLDERS)] if models_dir else []:
            candidates += [root / raw, root / raw.name]
    for candidate in dict.fromkeys(candidates):
        if candidate.is_file():
            return candidate.resolve()
    where = str(models_dir) if models_dir else "the spec's folder, or pass --models-dir"
    raise ModelError(f"upscaler {value!r} not found: looked for {', '.join(map(str, dict.fromkeys(candidates)))}; "
                     f"put the file there ({where})")


def _torchvision_usable() -> bool:
    try:
        import torchvision.transforms.functional  # noqa: F401
    except (ImportError, RuntimeError, OSError):
        for name in [key for key in sys.modules if key == "torchvision" or key.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


def _import_spandrel_without_torchvision():
    """Import spandrel where torchvision cannot be imported.

    spandrel imports torchvision for two architectures that are not upscalers (LaMa inpainting and
    RestoreFormer face restoration). CPU-only torch builds often have no matching torchvision, and a
    mismatched one fails at import. For the length of spandrel's import a stand-in takes its name,
    whose functions say why they cannot run; it is removed afterwards so no other library mistakes
    it for torchvision. Every upscaler architecture works without it.
    """
    def missing(attribute: str):
        def unavailable(*_args, **_kwargs):
            raise ModelError(f"this model needs torchvision ({attribute}), which is not installed in a "
                             f"version matching torch; install the torchvision built for your torch")
        return unavailable

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.__getattr__ = missing  # PEP 562: any name imported from it is the stand-in
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    package = types.ModuleType("torchvision")
    package.transforms = transforms
    stand_ins = {"torchvision": package, "torchvision.transforms": transforms,
                 "torchvision.transforms.functional": functional}
    sys.modules.update(stand_ins)
    try:
        import spandrel
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    return spandrel


@lru_cache(maxsize=1)
def _loader():
    if importlib.util.find_spec("spandrel") is None:
        raise ModelError("upscaler model files need spandrel: pip install 'gridgen[upscalers]' (on a CPU-only "
                         "torch: pip install --no-deps spandrel==0.4.2 einops)")
    if _torchvision_usable():
        import spandrel
    else:
        spandrel = _import_spandrel_without_torchvision()

    try:  # more architectures (those under non-commercial licences) for users who installed them
        from spandrel_extra_arches import EXTRA_REGISTRY
    except ImportError:
        pass
    else:
        spandrel.MAIN_REGISTRY.add(*EXTRA_REGISTRY, ignore_duplicates=True)
    return spandrel


def load_model_file(path: Path, label: str, use_instead: str, expected: str):
    """spandrel's descriptor of the model in `path` (CPU, fp32), cached per modification time.

    `label` names the value in errors ("upscaler X", "inpainter lama:X"), `use_instead` says what to
    use when spandrel cannot identify the file, and `expected` is the descriptor class the caller
    needs (`ImageModelDescriptor`, `MaskedImageModelDescriptor`); raises ModelError.
    """
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ModelError(f"{label}: cannot read the file ({exc})") from exc
    descriptor = _load(path, mtime, label, use_instead)
    if type(descriptor).__name__ != expected:
        kind = "an upscaler" if expected == "ImageModelDescriptor" else "an inpainting model"
        raise ModelError(f"{label}: this is a {descriptor.architecture.name} {descriptor.purpose} model, "
                         f"not {kind}; {use_instead}")
    return descriptor


@lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int, label: str, use_instead: str):
    spandrel = _loader()
    try:
        return spandrel.ModelLoader("cpu").load_from_file(path).eval()
    except spandrel.UnsupportedModelError as exc:
        raise ModelError(f"{label}: spandrel cannot identify the model in this file, its architecture is "
                         f"unknown; {use_instead}") from exc
    except Exception as exc:  # noqa: BLE001 - torch and safetensors raise many kinds on a bad file
        raise ModelError(f"{label}: cannot read the model file ({type(exc).__name__}: {exc}); "
                         f"re-download it or check that it is a .pth or .safetensors model") from exc


def load_upscale_model(path: Path):
    """The spandrel `ImageModelDescriptor` in `path` (on the CPU, fp32), cached; raises ModelError."""
    more = "" if "spandrel_extra_arches" in sys.modules else " (installing spandrel_extra_arches adds more)"
    descriptor = load_model_file(path, f"upscaler {path}", f"use an ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT or "
                                 f"Compact model file{more}", "ImageModelDescriptor")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelError(f"upscaler {path}: this model takes {descriptor.input_channels} and gives "
                         f"{descriptor.output_channels} channels; gridgen upscales RGB images (3 channels)")
    return descriptor
