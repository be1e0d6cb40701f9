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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gridgen.backends.sd.locate import _find
from gridgen.errors import ModelError
from gridgen.segment_params import SamPrompt
from gridgen.tiny import tiny_folder


def _sam_dir(folder: Path) -> Path | None:
    return folder if (folder / "config.json").is_file() else None


@lru_cache(maxsize=16)
def resolve_sam(value: str, spec_dir: Path, models_dir: Path | None) -> Path:
    """The SamModel folder `value` names, checked to be one; raises ModelError."""
    folder = tiny_folder(value)
    if folder is not None and not folder.is_dir():
        raise ModelError(f"sam_model {value!r}: the embedded tiny SAM is not in this install ({folder}); "
                         f"give a SamModel folder or a cached id such as facebook/sam-vit-base")
    folder = folder or _find("sam_model", value, spec_dir, models_dir, "sam", _sam_dir, "config.json", "SamModel")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"sam_model {value!r}: cannot read {folder / 'config.json'} ({exc})") from exc
    if config.get("model_type") != "sam":
        raise ModelError(f"sam_model {value!r}: {folder} holds a {config.get('model_type')!r} model, not a "
                         f"Segment Anything model (transformers SamModel)")
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
        model = SamModel.from_pretrained(path, local_files_only=True)
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


def pick(masks: np.ndarray, scores: np.ndarray, choice: str) -> Image.Image:
    """The mask `sam_mask` asks for (`best`: the highest predicted IoU), as an "L" image."""
    index = int(np.argmax(scores)) if choice == "best" else int(choice)
    return Image.fromarray(masks[index].astype(np.uint8) * 255, "L")
