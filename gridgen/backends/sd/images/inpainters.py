"""The weight-free and LaMa inpainters of a SAM edit: OpenCV's Telea and LaMa model files through spandrel.

Both fill the white part of a mask from the rest of the image and take no prompt. (The third kind
of inpainter, a Stable Diffusion model, runs through `gridgen.backends.sd.kinds.edit`.) LaMa files are
resolved like upscaler files and identified by spandrel; anything it cannot identify, or that is
not an inpainting model, is a `ModelError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from gridgen.backends.sd.denoise.inference import inference_mode
from gridgen.backends.sd.stages.upscale_models import load_model_file

if TYPE_CHECKING:
    import torch

TELEA_RADIUS = 3  # px of neighbourhood each filled pixel is estimated from


def telea(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Alexandru Telea's fast marching inpainting (cv2.inpaint) of the mask's white pixels."""
    import cv2
    import numpy as np

    filled = cv2.inpaint(np.asarray(image.convert("RGB")), np.asarray(mask.convert("L")), TELEA_RADIUS,
                         cv2.INPAINT_TELEA)
    return Image.fromarray(filled, "RGB")


def load_lama(path: Path):
    """The spandrel descriptor of the LaMa model in `path` (CPU, fp32), cached per modification time."""
    return load_model_file(path, f"inpainter lama:{path}", "use a LaMa model file (big-lama.pt, .pth or "
                           ".safetensors)", "MaskedImageModelDescriptor")


@inference_mode
def lama(model, image: Image.Image, mask: Image.Image, device: torch.device) -> Image.Image:
    """LaMa's fill of the mask's white pixels (spandrel pads the image to the model's multiple and back)."""
    from gridgen.backends.sd.images.resample import to_image, to_tensor

    model.to(device)
    pixels = to_tensor(image, device)
    holes = (to_tensor(mask.convert("RGB"), device)[:, :1] >= 0.5).float()
    return to_image(model(pixels, holes))
