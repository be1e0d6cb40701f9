"""Builds tiny LoRA and textual-inversion files for the tiny model, in the formats users download.

LoRAs are made with peft on the tiny UNet (random, non-zero up weights so they change the output)
and written by diffusers' `save_lora_weights`, or renamed to A1111/kohya keys; text-encoder LoRAs
are random kohya-named tensors, which `merge_text_encoder_lora` folds into an encoder's weights as
the reference a LoRA'd encoder must match; embeddings are written in A1111's .pt and .safetensors
layouts, diffusers' layout and SDXL's `clip_l`/`clip_g` layout.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from gridgen.tiny import TINY_MODEL_DIR

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def unet_lora_weights(seed: int = 0, rank: int = 4, model: Path = TINY_MODEL_DIR) -> dict[str, torch.Tensor]:
    """peft's state dict (`...to_q.lora_A.weight`) of a random LoRA on the attention of `model`'s UNet."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model / "unet")
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


def sgm_names(weights: dict[str, torch.Tensor], layers_per_block: int = 2) -> dict[str, torch.Tensor]:
    """UNet attention LoRA keys in the original (SGM) layout that kohya's SDXL files use: `down_blocks.1.attentions.0`
    becomes `input_blocks.4.1`, `mid_block.attentions.0` `middle_block.1`, `up_blocks.0.attentions.2`
    `output_blocks.2.1` (each block holds `layers_per_block` resnets, plus one more going up)."""
    renamed = {}
    for key, value in weights.items():
        parts = key.split(".")
        if parts[0] == "mid_block":  # mid_block.attentions.0.<rest>
            renamed[".".join(["middle_block", "1", *parts[3:]])] = value
            continue
        block, index = int(parts[1]), int(parts[3])  # down_blocks.1.attentions.0.<rest>
        if parts[0] == "down_blocks":
            head = ["input_blocks", str(1 + block * (layers_per_block + 1) + index), "1"]
        else:
            head = ["output_blocks", str(block * (layers_per_block + 1) + index), "1"]
        renamed[".".join(head + parts[4:])] = value
    return renamed


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


TEXT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def text_encoder_kohya_weights(seed: int = 0, rank: int = 4, layers: int = 2, width: int = 64,
                               prefix: str = "lora_te") -> dict:
    """Kohya-named LoRA weights for a tiny text encoder's attention projections (`lora_te1`/`lora_te2` on SDXL)."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for layer in range(layers):
        for projection in TEXT_PROJECTIONS:
            name = f"{prefix}_text_model_encoder_layers_{layer}_self_attn_{projection}"
            weights[f"{name}.lora_down.weight"] = torch.randn((rank, width), generator=generator) * 0.5
            weights[f"{name}.lora_up.weight"] = torch.randn((width, rank), generator=generator) * 0.5
            weights[f"{name}.alpha"] = torch.tensor(float(rank))
    return weights


def kohya_to_diffusers_text(weights: dict, prefix: str, component: str) -> dict:
    """The same text-encoder LoRA under diffusers' key names (`text_encoder.text_model....q_proj.lora_A.weight`);
    diffusers' files carry no alphas, so the kohya alphas must equal the rank."""
    renamed = {}
    for key, value in weights.items():
        if key.endswith(".alpha"):
            continue
        module, kind = key.removeprefix(f"{prefix}_text_model_").rsplit(".lora_", 1)
        layer, projection = module.removeprefix("encoder_layers_").split("_self_attn_")
        side = "lora_A" if kind.startswith("down") else "lora_B"
        renamed[f"{component}.text_model.encoder.layers.{layer}.self_attn.{projection}.{side}.weight"] = value
    return renamed


def merge_text_encoder_lora(encoder, weights: dict, prefix: str, scale: float):
    """A copy of `encoder` with the kohya LoRA folded into its weights: W + scale * alpha / rank * up @ down."""
    import copy

    merged = copy.deepcopy(encoder)
    layers = getattr(merged, "text_model", merged).encoder.layers
    for key, down in weights.items():
        if not key.endswith(".lora_down.weight"):
            continue
        name = key.removesuffix(".lora_down.weight")
        layer, projection = name.removeprefix(f"{prefix}_text_model_encoder_layers_").split("_self_attn_")
        up, alpha = weights[f"{name}.lora_up.weight"], float(weights[f"{name}.alpha"])
        module = getattr(layers[int(layer)].self_attn, projection)
        module.weight.data += scale * alpha / down.shape[0] * (up @ down)
    return merged


def write_sdxl_embedding(path: Path, clip_l: torch.Tensor | None, clip_g: torch.Tensor | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = {"clip_l": clip_l, "clip_g": clip_g}
    save_file({name: value.contiguous() for name, value in parts.items() if value is not None}, path)
    return path
