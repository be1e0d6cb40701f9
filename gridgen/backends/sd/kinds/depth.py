"""The depth a depth2img cell follows: its `depth_map` image, or a DPT depth model's estimate from `init_image`.

The depth model is the `depth_model` param's (a transformers DPTForDepthEstimation folder with its
image processor, or a depth2img pipeline folder holding one), else the depth2img model's own
`depth_estimator` and `feature_extractor`. An estimate depends only on the init image's bytes and
the depth model, so it is kept in the stage cache: a grid over prompts, seeds or CFG scales of one
init image runs the depth model once per image. Either source then becomes what diffusers'
StableDiffusionDepth2ImgPipeline feeds its UNet: stretched to latent size (bicubic) and scaled so
the nearest point is 1 and the farthest -1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from gridgen.backends.base import BackendContext
from gridgen.backends.sd.denoise.inference import inference_mode
from gridgen.backends.sd.images.inputs import ImageInputs
from gridgen.backends.sd.models.locate import find
from gridgen.backends.sd.models.model_cache import modified
from gridgen.backends.sd.stages.cache import StageCache, stage_key
from gridgen.errors import ModelError

if TYPE_CHECKING:
    import numpy as np
    import torch


DEPTH_PARAMS = ("depth_map", "depth_model")
_WEIGHTS = ("*.safetensors", "*.bin")
_HOW = ("give depth_map (a depth image, white = near) or depth_model (a DPT depth model folder such as "
        "Intel/dpt-hybrid-midas, or a depth2img pipeline folder)")


@dataclass(frozen=True)
class DepthModel:
    """Where a DPT depth model's files are."""

    weights: Path  # the DPTForDepthEstimation folder: config.json and weights
    processor: Path  # the folder of its image processor's preprocessor_config.json


def _layout(folder: Path) -> DepthModel | None:
    """The depth model in `folder`: a model folder itself, or a pipeline's depth_estimator/feature_extractor."""
    if (folder / "config.json").is_file():
        return DepthModel(folder, folder)
    if (folder / "depth_estimator" / "config.json").is_file():
        return DepthModel(folder / "depth_estimator", folder / "feature_extractor")
    return None


def _checked(found: DepthModel, what: str) -> DepthModel:
    """`found` when its config says DPT depth estimation and its weights and processor are there; else ModelError."""
    try:
        config = json.loads((found.weights / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{what}: cannot read {found.weights / 'config.json'} ({exc}); re-download the depth "
                         f"model") from None
    architectures = config.get("architectures") or ["DPTForDepthEstimation"]
    if config.get("model_type") != "dpt" or "DPTForDepthEstimation" not in architectures:
        kind = " / ".join(config.get("architectures") or []) or config.get("_class_name") or config.get("model_type")
        raise ModelError(f"{what}: {found.weights} holds a model of type {kind or 'unknown'}, not a DPT depth model "
                         f"(DPTForDepthEstimation); {_HOW}")
    if not any(any(found.weights.glob(pattern)) for pattern in _WEIGHTS):
        raise ModelError(f"{what}: {found.weights} has a config but no weights ({' or '.join(_WEIGHTS)}); "
                         f"the depth model was not fully downloaded or copied")
    if not (found.processor / "preprocessor_config.json").is_file():
        raise ModelError(f"{what}: {found.processor} has no preprocessor_config.json (the image processor that "
                         f"sizes and normalises the depth model's input); save it beside the model")
    return found


def resolve_depth_model(value: str, spec_dir: Path, models_dir: Path | None) -> DepthModel:
    """The depth model `value` names: a folder (absolute, relative to the spec file, or in the models folder or
    its `depth` subfolders) or a Hugging Face id already in the local cache; raises ModelError."""
    folder = find("depth_model", value, spec_dir, models_dir, "depth", _depth_folder, "config.json",
                  "DPT depth model or depth2img pipeline", suffixes=())
    return _checked(_layout(folder), f"depth_model {value!r}")


def _depth_folder(folder: Path) -> Path | None:
    return folder if _layout(folder) is not None else None


def bundled_depth_model(model: Path) -> DepthModel | None:
    """The depth2img model folder's own depth estimator, or None (a single file, or a folder without one)."""
    if model.is_dir() and (model / "depth_estimator" / "config.json").is_file():
        return DepthModel(model / "depth_estimator", model / "feature_extractor")
    return None


def depth_values(image: Image.Image) -> np.ndarray:
    """A depth image's values as floats: 16-bit and float images keep their precision, colour is read as luma."""
    import numpy as np

    direct = image.mode in ("L", "I", "F") or image.mode.startswith("I;16")
    return np.array((image if direct else image.convert("RGB")).convert("F"), dtype=np.float32)


def normalised(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, H, W) depth as the UNet reads it: (1, 1, h, w) at latent `size`, nearest 1, farthest -1."""
    import torch
    import torch.nn.functional as F

    depth = F.interpolate(raw[:, None].float(), size=size, mode="bicubic", align_corners=False)
    low, high = depth.amin(), depth.amax()
    if high == low:  # no near or far to tell apart; diffusers would divide by zero here
        return torch.zeros_like(depth)
    return 2.0 * (depth - low) / (high - low) - 1.0


class DepthMaps:
    """Each cell's depth, with the last depth model used kept loaded and its estimates kept in `cache`."""

    def __init__(self, context: BackendContext, cache: StageCache, inputs: ImageInputs,
                 resolve: Callable[[Callable, str], Any]):
        """`resolve(resolver, value)` calls resolver(value, spec_dir, models_dir), remembering the answer."""
        self.context = context
        self.cache = cache
        self.inputs = inputs
        self.resolve = resolve
        self.estimated = 0  # depth model runs
        self.reused = 0  # estimates served from the cache
        self._loaded: tuple[DepthModel, Any, Any] | None = None

    def source(self, params: dict[str, Any], model: Path) -> DepthModel | None:
        """The depth model a cell of depth2img `model` reads, or None when its depth_map is the depth;
        raises ModelError when neither is there."""
        if params.get("depth_map"):
            return None
        if params.get("depth_model"):
            return self.resolve(resolve_depth_model, str(params["depth_model"]))
        bundled = bundled_depth_model(model)
        if bundled is None:
            why = "a single-file checkpoint holds none" if model.is_file() else f"{model} has no depth_estimator/"
            raise ModelError(f"model {str(params['model'])!r} brings no depth model ({why}); {_HOW}")
        return _checked(bundled, f"model {str(params['model'])!r}")

    def flat_map_problem(self, value: str) -> str | None:
        """Why the depth_map `value` cannot serve as depth (one value all over), or None."""
        values = depth_values(self.inputs.read("depth_map", value)[0])
        if values.min() == values.max():
            return (f"depth_map {value!r} has the same value ({values.min():g}) everywhere, so it tells nothing "
                    f"near from far; give a depth image with near parts lighter than far ones")
        return None

    def for_batch(self, batch: Sequence[dict[str, Any]], model: Path, size: tuple[int, int],
                  device: torch.device) -> torch.Tensor:
        """(N, 1, h, w) depth of a batch of cells of depth2img `model`, at latent `size`, fp32 on `device`."""
        import torch

        return torch.cat([normalised(self._raw(params, model), size) for params in batch]).to(device)

    def _raw(self, params: dict[str, Any], model: Path) -> torch.Tensor:
        import torch

        source = self.source(params, model)
        if source is None:
            return torch.from_numpy(depth_values(self.inputs.read("depth_map", params["depth_map"])[0]))[None]
        _, fingerprint = self.inputs.read("init_image", params["init_image"])
        # The weights' modification time too: the cache may spill to disk and outlive a model replaced in place.
        key = stage_key("depth", {"depth_model": str(source.weights), "modified": modified(source.weights)},
                        fingerprint)
        raw = self.cache.get(key)
        if raw is not None:
            self.reused += 1
            return raw
        raw = self._estimate(source, self.inputs.load("init_image", params["init_image"]))
        self.estimated += 1
        self.cache.put(key, raw)
        return raw

    @inference_mode
    def _estimate(self, source: DepthModel, image: Image.Image) -> torch.Tensor:
        """The depth model's raw (1, H, W) prediction for `image`, at the size its processor feeds it, on the CPU."""
        estimator, processor = self._load(source)
        pixel_values = processor(images=[image], return_tensors="pt").pixel_values
        return estimator(pixel_values.to(estimator.device)).predicted_depth.float().cpu()

    def _load(self, source: DepthModel) -> tuple[Any, Any]:
        from transformers import DPTForDepthEstimation, DPTImageProcessor

        from gridgen.backends.sd.models.load import pick_device

        if self._loaded is None or self._loaded[0] != source:
            self._loaded = None  # one depth model in memory at a time
            try:
                # fp32 whatever the UNet's dtype: DPT-Hybrid's batch norms are not made for fp16.
                estimator = DPTForDepthEstimation.from_pretrained(source.weights, local_files_only=True)
                processor = DPTImageProcessor.from_pretrained(source.processor, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelError(f"cannot load the depth model {source.weights}: {exc}; re-download it") from exc
            self._loaded = (source, estimator.to(pick_device(self.context.device)).eval(), processor)
        return self._loaded[1], self._loaded[2]

    def stats(self) -> list[str]:
        return [f"depth maps: {self.estimated} estimated, {self.reused} reused"] if self.estimated else []

    def close(self) -> None:
        self._loaded = None
