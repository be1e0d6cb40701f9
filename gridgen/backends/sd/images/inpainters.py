"""The weight-free and LaMa inpainters of a SAM edit and of outpainting's fill: OpenCV's Telea and LaMa model
files through spandrel.

Both fill the white part of a mask from the rest of the image and take no prompt. (The third kind
of inpainter, a Stable Diffusion model, runs through `gridgen.backends.sd.kinds.edit`.) LaMa files are
found next to the spec or in the models folder (and its LaMa subfolders) and identified by spandrel;
a missing file, or one it cannot identify or that is not an inpainting model, is a `ModelError` naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from gridgen.backends.sd.denoise.inference import inference_mode
from gridgen.backends.sd.stages.upscale_models import load_model_file
from gridgen.errors import ModelError

if TYPE_CHECKING:
    import torch

TELEA_RADIUS = 3  # px of neighbourhood each filled pixel is estimated from
LAMA_SUBFOLDERS = ("LaMa", "lama", "inpaint")


def telea(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Alexandru Telea's fast marching inpainting (cv2.inpaint) of the mask's white pixels."""
    import cv2
    import numpy as np

    filled = cv2.inpaint(np.asarray(image.convert("RGB")), np.asarray(mask.convert("L")), TELEA_RADIUS,
                         cv2.INPAINT_TELEA)
    return Image.fromarray(filled, "RGB")


def resolve_lama(name: str, spec_dir: Path, models_dir: Path | None, param: str = "inpainter") -> Path:
    """The LaMa file `lama:<name>` names: as written (absolute, or next to the spec), then in the models folder
    and its LaMa subfolders; raises ModelError saying where it looked, under `param`'s name."""
    raw = Path(name).expanduser()
    roots = [Path(spec_dir)] + ([models_dir, *(models_dir / sub for sub in LAMA_SUBFOLDERS)] if models_dir else [])
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ModelError(f"{param} lama:{name}: no such file; looked for {', '.join(map(str, candidates))}")


def load_lama(path: Path, param: str = "inpainter"):
    """The spandrel descriptor of the LaMa model in `path` (CPU, fp32), cached per modification time."""
    return load_model_file(path, f"{param} lama:{path}", "use a LaMa model file (big-lama.pt, .pth or "
                           ".safetensors)", "MaskedImageModelDescriptor")


@inference_mode
def lama(model, image: Image.Image, mask: Image.Image, device: torch.device) -> Image.Image:
    """LaMa's fill of the mask's white pixels (spandrel pads the image to the model's multiple and back)."""
    from gridgen.backends.sd.images.resample import to_image, to_tensor

    model.to(device)
    pixels = to_tensor(image, device)
    holes = (to_tensor(mask.convert("RGB"), device)[:, :1] >= 0.5).float()
    return to_image(model(pixels, holes))
