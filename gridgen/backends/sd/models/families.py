"""Which shipped config family fits a single-file checkpoint, told from its tensor names and shapes.

A1111-style files hold weights only. The diffusers configs they need ship in `configs/<family>/`
(model_index, unet, vae, text encoder(s), tokenizer settings, scheduler). The rule, in order:

- a UNet must be there (`model.diffusion_model.input_blocks.0.0.weight`); its input channels are
  the pipeline kind (4 txt2img, 5 depth2img, 7 x4 upscaler, 8 instruct-pix2pix, 9 inpainting);
- `conditioner.embedders.1.model.*` (OpenCLIP ViT-bigG beside CLIP ViT-L) is SDXL base (and, with a
  9-channel UNet, SDXL inpainting);
- `cond_stage_model.model.*` (OpenCLIP ViT-H) is SD 2.x; `cond_stage_model.transformer.*`
  (CLIP ViT-L) is SD 1.x;
- SD 2.x txt2img weights look the same for the 512 epsilon and the 768 v-prediction models, so
  the 768-v config (SD 2.0-v, 2.1) is taken unless the `prediction` param says `epsilon`;
- an SD 2.x 4-channel UNet with an image-embedding input (`label_emb`) is an unCLIP checkpoint, which
  has no shipped config: unCLIP runs from diffusers folders.
"""

from __future__ import annotations

from pathlib import Path

from gridgen.backends.sd.kinds.channels import KIND_BY_CHANNELS
from gridgen.errors import ModelError

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
UNET_INPUT = "model.diffusion_model.input_blocks.0.0.weight"
# The image-embedding input of an SD 2.x unCLIP UNet (SDXL's size conditioning and the x4 upscaler's noise
# level use the same name, but not with an SD 2.x text encoder and 4 input channels).
UNCLIP_LABEL = "model.diffusion_model.label_emb.0.0.weight"
# (text encoder layout, UNet input channels) -> family folder.
FAMILIES = {
    ("sd1", 4): "sd1", ("sd1", 8): "sd1-ip2p", ("sd1", 9): "sd1-inpaint",
    ("sd2", 4): "sd2-v", ("sd2", 5): "sd2-depth", ("sd2", 7): "sd2-x4-upscaler", ("sd2", 9): "sd2-inpaint",
    ("sdxl", 4): "sdxl", ("sdxl", 8): "sdxl-ip2p", ("sdxl", 9): "sdxl-inpaint",
}
_TEXT_LAYOUTS = (
    ("conditioner.embedders.1.model.", "sdxl"),
    ("cond_stage_model.model.", "sd2"),
    ("cond_stage_model.transformer.", "sd1"),
)


def config_root() -> Path:
    return CONFIG_ROOT


def text_layout(keys) -> str | None:
    """sd1, sd2 or sdxl from the text encoder's key prefix, or None."""
    for prefix, layout in _TEXT_LAYOUTS:
        if any(key.startswith(prefix) for key in keys):
            return layout
    return None


def detect_family(path: Path, shapes: dict[str, tuple[int, ...]], prediction: str = "auto") -> Path:
    """The config folder for the checkpoint at `path` with these tensor shapes; raises ModelError."""
    if UNET_INPUT not in shapes:
        raise ModelError(f"{path} has no Stable Diffusion UNet (no {UNET_INPUT}); it may be a VAE, LoRA or "
                         f"embedding file: use it as `vae`, `lora` or `embedding`, or pick a full checkpoint")
    channels = shapes[UNET_INPUT][1]
    layout = text_layout(shapes)
    if layout is None:
        refiner = any(key.startswith("conditioner.embedders.0.model.") for key in shapes)
        what = "an SDXL refiner" if refiner else "a model whose text encoder gridgen does not know"
        raise ModelError(f"{path} is {what}; gridgen loads SD 1.x, SD 2.x and SDXL base checkpoints")
    if layout == "sd2" and channels == 4 and UNCLIP_LABEL in shapes:
        raise ModelError(f"{path} is an SD 2.x unCLIP checkpoint; gridgen runs unCLIP models from diffusers folders "
                         f"(StableUnCLIPImg2ImgPipeline, such as stabilityai/stable-diffusion-2-1-unclip): point "
                         f"model at one")
    family = FAMILIES.get((layout, channels))
    if family is None:
        raise ModelError(f"{path} is an {layout.upper()} checkpoint whose UNet takes {channels} input channels; "
                         f"gridgen has no {layout.upper()} config for that ({_known()})")
    if family == "sd2-v" and prediction == "epsilon":
        family = "sd2"
    return config_root() / family


def _known() -> str:
    return ", ".join(f"{layout.upper()} {KIND_BY_CHANNELS[channels]}" for layout, channels in FAMILIES)
