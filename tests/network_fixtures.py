"""Builds tiny LoRA and textual-inversion files for the tiny model, in the formats users download.

LoRAs are made with peft on the tiny UNet (random, non-zero up weights so they change the output)
and written by diffusers' `save_lora_weights`, or renamed to A1111/kohya keys; embeddings are
written in A1111's .pt and .safetensors layouts and diffusers' layout.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from gridgen.tiny import TINY_MODEL_DIR

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def unet_lora_weights(seed: int = 0, rank: int = 4) -> dict[str, torch.Tensor]:
    """peft's state dict (`...to_q.lora_A.weight`) of a random LoRA on the tiny UNet's attention."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(TINY_MODEL_DIR / "unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=UNET_TARGETS))
    return {key: value.detach().clone().contiguous() for key, value in get_peft_model_state_dict(unet).items()}


def write_diffusers_lora(folder: Path, weights: dict[str, torch.Tensor]) -> Path:
    """A folder holding diffusers' pytorch_lora_weights.safetensors; returns the file."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=convert_state_dict_to_diffusers(weights),
                                              safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


def write_kohya_lora(path: Path, weights: dict[str, torch.Tensor], rank: int = 4) -> Path:
    """The same LoRA under A1111/kohya key names (`lora_unet_..._to_q.lora_down.weight` plus `.alpha`)."""
    kohya = {}
    for key, value in weights.items():
        module, kind = key.rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        kohya[f"{name}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value
        kohya[f"{name}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(kohya, path)
    return path


def write_a1111_pt(path: Path, vectors: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "trained-as",
                "step": 1000, "sd_checkpoint": None, "sd_checkpoint_name": None}, path)
    return path


def write_a1111_safetensors(path: Path, vectors: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": vectors.contiguous()}, path)
    return path


def write_diffusers_embedding(path: Path, vectors: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"<learned>": vectors.contiguous()}, path)
    return path


def text_encoder_kohya_weights(seed: int = 0, rank: int = 4, layers: int = 2, width: int = 64) -> dict:
    """Kohya-named LoRA weights for the tiny text encoder's attention projections."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for layer in range(layers):
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            name = f"lora_te_text_model_encoder_layers_{layer}_self_attn_{projection}"
            weights[f"{name}.lora_down.weight"] = torch.randn((rank, width), generator=generator) * 0.5
            weights[f"{name}.lora_up.weight"] = torch.randn((width, rank), generator=generator) * 0.5
            weights[f"{name}.alpha"] = torch.tensor(float(rank))
    return weights
