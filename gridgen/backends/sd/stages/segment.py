"""Segment Anything through `transformers`: finding a `sam_model`, loading it, and turning a prompt into masks.

A `sam_model` is a folder holding a `SamModel` and its `SamProcessor` (config.json, weights,
processor config), a Hugging Face id already in the local cache (facebook/sam-vit-base, -large,
-huge), or `gridgen-tiny-sam`, the embedded tiny model. The processor resizes the image so its
longest side is the model's input size and pads it square, and maps the prompt's pixel
coordinates the same way; the masks come back at the input image's size. SAM answers a prompt
with three candidate masks and its own estimate of each one's IoU, which `sam_mask` picks from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gridgen.backends.sd.models.locate import _from_hub_cache
from gridgen.backends.sd.stages.segment_params import SamPrompt
from gridgen.errors import ModelError
from gridgen.tiny import tiny_folder

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _find_sam(value: str, spec_dir: Path, models_dir: Path | None) -> Path:
    raw = Path(value).expanduser()
    roots = [spec_dir] + ([models_dir, models_dir / "sam"] if models_dir else [])
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    for candidate in candidates:
        if candidate.is_dir():
            if not (candidate / "config.json").is_file():
                raise ModelError(f"sam_model {value!r}: {candidate} has no config.json, so it is not a SamModel "
                                 f"folder; point sam_model at a folder saved by transformers (model and processor)")
            return candidate
    looked = [str(c) for c in candidates]
    if _HUB_ID.match(value):
        cached = _from_hub_cache(value, "config.json")
        if cached is not None:
            return cached
        looked.append("the Hugging Face cache")
    raise ModelError(f"sam_model {value!r} not found: looked for {', '.join(looked)}; download it (e.g. "
                     f"facebook/sam-vit-base) or give a SamModel folder")


@lru_cache(maxsize=16)
def resolve_sam(value: str, spec_dir: Path, models_dir: Path | None) -> Path:
    """The SamModel folder `value` names, checked to be one; raises ModelError."""
    folder = tiny_folder(value)
    if folder is not None and not folder.is_dir():
        raise ModelError(f"sam_model {value!r}: the embedded tiny SAM is not in this install ({folder}); "
                         f"give a SamModel folder or a cached id such as facebook/sam-vit-base")
    folder = (folder or _find_sam(value, spec_dir, models_dir)).resolve()
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"sam_model {value!r}: cannot read {folder / 'config.json'} ({exc})") from exc
    if config.get("model_type") != "sam":
        kind = config.get("model_type") or config.get("_class_name")
        raise ModelError(f"sam_model {value!r}: {folder} holds a {kind} model, not a Segment Anything model "
                         f"(a transformers SamModel)")
    return folder


@dataclass
class Sam:
    path: Path
    model: Any  # transformers SamModel
    processor: Any  # transformers SamProcessor
    device: torch.device


def load_sam(path: Path, device: torch.device) -> Sam:
    from transformers import SamModel, SamProcessor

    try:
        # fp32 whatever the file holds (the embedded SAM is stored in fp16): segment() feeds it fp32.
        model = SamModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        processor = SamProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"sam_model {path}: cannot load it ({exc}); it must hold a SamModel and its "
                         f"SamProcessor (transformers' save_pretrained of both)") from exc
    return Sam(path, model.to(device).eval(), processor, device)


def model_inputs(processor, image: Image.Image, prompt: SamPrompt) -> dict[str, torch.Tensor]:
    """The processor's tensors for one image and one prompt (its points and box mapped into the model's frame)."""
    kwargs: dict[str, Any] = {}
    if prompt.points:
        kwargs["input_points"] = [[[list(point) for point in prompt.points]]]
        kwargs["input_labels"] = [[list(prompt.labels)]]
    if prompt.box is not None:
        kwargs["input_boxes"] = [[list(prompt.box)]]
    return processor(images=image.convert("RGB"), return_tensors="pt", **kwargs)


@torch.inference_mode()
def segment(sam: Sam, image: Image.Image, prompt: SamPrompt) -> tuple[np.ndarray, np.ndarray]:
    """SAM's three masks for `prompt` on `image`: (3, H, W) bool at the image's size, and their predicted IoUs."""
    inputs = model_inputs(sam.processor, image, prompt)
    sizes = {name: inputs.pop(name) for name in ("original_sizes", "reshaped_input_sizes")}
    inputs = {name: value.to(sam.device, dtype=torch.float32) if value.is_floating_point() else value.to(sam.device)
              for name, value in inputs.items()}
    outputs = sam.model(**inputs, multimask_output=True)
    (masks,) = sam.processor.image_processor.post_process_masks(
        outputs.pred_masks.float().cpu(), sizes["original_sizes"], sizes["reshaped_input_sizes"])
    return masks[0].numpy().astype(bool), outputs.iou_scores[0, 0].float().cpu().numpy()


def index_of(scores: np.ndarray, choice: str) -> int:
    """Which of the three masks `sam_mask` asks for: `best` is the highest predicted IoU."""
    return int(np.argmax(scores)) if choice == "best" else int(choice)


def pick(masks: np.ndarray, scores: np.ndarray, choice: str) -> Image.Image:
    """The mask `sam_mask` asks for, as an "L" image."""
    return Image.fromarray(masks[index_of(scores, choice)].astype(np.uint8) * 255, "L")
