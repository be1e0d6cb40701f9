"""Writes tiny diffusers models as A1111-style single files, in the original LDM key layout.

diffusers reads that layout but has no writer, so the tests carry this inverse of its key mapping for
the model shapes they build. Loading such a file back through gridgen and finding the original
weights is what shows the single-file path works.
"""

from __future__ import annotations

import re

import torch

UNET = "model.diffusion_model."
VAE = "first_stage_model."
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2",
             "class_embedding": "label_emb"}  # (the x4 upscaler's noise-level table)
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(rest: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    per_block = config.layers_per_block + 1  # LDM counts the down/upsampler as one more layer of a block
    attention_blocks = {i for i, kind in enumerate(config.up_block_types) if kind.startswith("CrossAttn")}
    out = {}
    for key, value in state.items():
        top = _rename(key, _UNET_TOP)
        if top != key:
            out[UNET + top] = value
            continue
        if match := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            block, part, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
            index = 1 + block * per_block + layer
            new = f"input_blocks.{index}.0.{_rename(rest, _UNET_RESNET)}" if part == "resnets" else \
                f"input_blocks.{index}.1.{rest}"
        elif match := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{(int(match[1]) + 1) * per_block}.0.op.{match[2]}"
        elif match := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
            if match[1] == "attentions":
                new = f"middle_block.1.{match[3]}"
            else:
                new = f"middle_block.{2 * int(match[2])}.{_rename(match[3], _UNET_RESNET)}"
        elif match := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            block, part, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
            index = block * per_block + layer
            new = f"output_blocks.{index}.0.{_rename(rest, _UNET_RESNET)}" if part == "resnets" else \
                f"output_blocks.{index}.1.{rest}"
        elif match := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            block = int(match[1])
            slot = 2 if block in attention_blocks else 1
            new = f"output_blocks.{block * per_block + per_block - 1}.{slot}.conv.{match[2]}"
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        out[UNET + new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], blocks: int, prefix: str = VAE) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        new = key.replace("conv_norm_out", "norm_out")
        if match := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"encoder.down.{match[1]}.block.{match[2]}.{match[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif match := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"encoder.down.{match[1]}.downsample.conv.{match[2]}"
        elif match := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            level = blocks - 1 - int(match[1])
            new = f"decoder.up.{level}.block.{match[2]}.{match[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif match := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            new = f"decoder.up.{blocks - 1 - int(match[1])}.upsample.conv.{match[2]}"
        elif match := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"{match[1]}.mid.block_{int(match[2]) + 1}.{match[3]}"
        elif match := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
            new = f"{match[1]}.mid.attn_1.{_rename(match[2], _VAE_ATTENTION)}"
            if value.ndim == 2:  # LDM keeps these projections as 1x1 convolutions
                value = value[:, :, None, None]
        out[prefix + new] = value
    return out


def clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModel in the layout SD 1.x (and SDXL's first encoder) keep it."""
    return {prefix + (key if key.startswith("text_model.") else "text_model." + key): value
            for key, value in state.items()}


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModel(WithProjection) in OpenCLIP's layout (SD 2.x, SDXL's second encoder)."""
    state = {key.removeprefix("text_model."): value for key, value in state.items()}
    out = {prefix + "token_embedding.weight": state["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": state["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": state["final_layer_norm.weight"],
           prefix + "ln_final.bias": state["final_layer_norm.bias"]}
    if "text_projection.weight" in state:
        out[prefix + "text_projection"] = state["text_projection.weight"].T.contiguous()
    layers = {int(m[1]) for key in state if (m := re.match(r"encoder\.layers\.(\d+)\.", key))}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for layer in sorted(layers):
        source, target = f"encoder.layers.{layer}.", f"{prefix}transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            out[f"{target}attn.in_proj_{kind}"] = torch.cat(
                [state[f"{source}self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")])
            for new, old in names.items():
                out[f"{target}{old}.{kind}"] = state[f"{source}{new}.{kind}"]
    return out
