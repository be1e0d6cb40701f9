"""Tiny random-weight SD 1.x / SD 2.x / SDXL models (the SD 2 x4 upscaler included) for the loading tests, as
diffusers folders and as A1111-style single files, plus a config root whose families describe them; and a
tiny x4 upscaler folder with a VAE of the real one's 4x scale (`build_x4`).

Shapes follow diffusers' own fast tests (32/64-channel UNets, 32-wide text encoders) but the text
encoders keep CLIP's real 49408-token vocabulary, because single files are tokenized with it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from gridgen.backends.sd.models import families
from gridgen.backends.sd.models.single_file import load_tokenizer
from tests import ldm_layout

# The noise levels a tiny sd2-x4-upscaler UNet embeds: 0 to the shipped family's max_noise_level.
X4_NOISE_LEVELS = 351
# Families whose weights have the same shapes, told apart by the `prediction` param only.
_SAME_WEIGHTS = {"sd2-v": ("sd2",)}


@dataclass
class TinyModel:
    folder: Path  # the diffusers folder
    family: str  # the shipped family it stands in for
    state: dict[str, torch.Tensor]  # the same weights in the LDM layout

    def write(self, path: Path) -> Path:
        """The single file, as .safetensors or (weights-only pickled) .ckpt by `path`'s suffix; a name ending in
        `legacy.ckpt` gets torch's pre-zip format, which old checkpoints use and which cannot be memory-mapped."""
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".safetensors":
            save_file({k: v.contiguous() for k, v in self.state.items()}, str(path))
        else:
            torch.save({"state_dict": self.state, "global_step": 1}, path,
                       _use_new_zipfile_serialization=not path.name.endswith("legacy.ckpt"))
        return path


def _text_config(hidden: int, act: str, projection: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                          vocab_size=49408, max_position_embeddings=77, projection_dim=projection, hidden_act=act,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1)


def _unet(in_channels: int, cross: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=16,
                                in_channels=in_channels, out_channels=4, cross_attention_dim=cross,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **extra)


def sdxl_unet(in_channels: int = 4):
    """A tiny random SDXL UNet: 72-wide text context, 32-wide pooled text and six size ids as added conditioning."""
    return _unet(in_channels, 72, attention_head_dim=(2, 4), use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                 projection_class_embeddings_input_dim=6 * 8 + 32)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, sample_size=32)


def build(folder: Path, family: str, in_channels: int = 4, seed: int = 0) -> TinyModel:
    """A tiny random model of `family`'s layout (sd1..., sd2..., sdxl) saved to `folder`."""
    from diffusers import StableDiffusionPipeline, StableDiffusionUpscalePipeline, StableDiffusionXLPipeline
    from diffusers.schedulers import DDPMScheduler, EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    shipped = families.CONFIG_ROOT / family
    scheduler = EulerDiscreteScheduler.from_pretrained(shipped / "scheduler")
    vae = _vae()
    if family.startswith("sdxl"):
        first = CLIPTextModel(_text_config(32, "quick_gelu"))
        second = CLIPTextModelWithProjection(_text_config(40, "gelu"))
        unet = sdxl_unet(in_channels)
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=first, text_encoder_2=second,
                                         tokenizer=load_tokenizer(shipped, "tokenizer"),
                                         tokenizer_2=load_tokenizer(shipped, "tokenizer_2"), unet=unet,
                                         scheduler=scheduler)
        text = {**ldm_layout.clip_to_ldm(first.state_dict(), "conditioner.embedders.0.transformer."),
                **ldm_layout.open_clip_to_ldm(second.state_dict(), "conditioner.embedders.1.model.")}
    else:
        sd2 = family.startswith("sd2")
        encoder = CLIPTextModel(_text_config(32, "gelu" if sd2 else "quick_gelu"))
        x4_upscaler = families.KIND_BY_CHANNELS.get(in_channels) == "x4-upscaler"
        unet = _unet(in_channels, 32, **({"use_linear_projection": True} if sd2 else {}),
                     **({"num_class_embeds": X4_NOISE_LEVELS} if x4_upscaler else {}))
        if x4_upscaler:  # the shipped family's noise schedule and limit, so the single file and the folder agree
            pipe = StableDiffusionUpscalePipeline(
                vae=vae, text_encoder=encoder, tokenizer=load_tokenizer(shipped, "tokenizer"), unet=unet,
                scheduler=scheduler, low_res_scheduler=DDPMScheduler.from_pretrained(shipped / "low_res_scheduler"),
                max_noise_level=X4_NOISE_LEVELS - 1)
        else:
            pipe = StableDiffusionPipeline(vae=vae, text_encoder=encoder,
                                           tokenizer=load_tokenizer(shipped, "tokenizer"), unet=unet,
                                           scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
        text = (ldm_layout.open_clip_to_ldm(encoder.state_dict(), "cond_stage_model.model.") if sd2
                else ldm_layout.clip_to_ldm(encoder.state_dict(), "cond_stage_model.transformer."))
    pipe.save_pretrained(folder)
    state = {**ldm_layout.unet_to_ldm(unet.state_dict(), unet.config), **ldm_layout.vae_to_ldm(vae.state_dict(), 2),
             **text}
    return TinyModel(folder, family, state)


def config_root(root: Path, models: list[TinyModel]) -> Path:
    """A copy of the shipped families with each tiny model's component configs in its family's place."""
    shutil.copytree(families.CONFIG_ROOT, root)
    for model in models:
        for family in (model.family, *_SAME_WEIGHTS.get(model.family, ())):
            for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
                source = model.folder / component / "config.json"
                if source.is_file():
                    shutil.copy(source, root / family / component / "config.json")
    return root


def build_x4(folder: Path, max_noise_level: int) -> Path:
    """A tiny random-weight SD x4 upscaler saved as a diffusers folder: a 3-block VAE (4x, as Stability's), the
    gridgen-tiny tokenizer, a v-prediction DDIM scheduler, and noise levels up to `max_noise_level`."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from gridgen.tiny import TINY_MODEL_DIR

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=7, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8, num_class_embeds=max_noise_level + 1)
    vae = AutoencoderKL(block_out_channels=(16, 16, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        norm_num_groups=8, scaling_factor=0.08333)
    tokenizer = CLIPTokenizer.from_pretrained(TINY_MODEL_DIR / "tokenizer")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"), max_noise_level=max_noise_level)
    pipe.save_pretrained(folder)
    return folder


def tiny_parts(in_channels: int) -> dict:
    """The gridgen-tiny text encoder, tokenizer, VAE and scheduler with a random UNet of `in_channels` inputs
    (seeded), as the keyword arguments of an SD pipeline of the UNet's kind."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from gridgen.tiny import TINY_MODEL_DIR

    torch.manual_seed(0)
    config = dict(UNet2DConditionModel.load_config(TINY_MODEL_DIR / "unet"))
    return {"vae": AutoencoderKL.from_pretrained(TINY_MODEL_DIR / "vae"),
            "text_encoder": CLIPTextModel.from_pretrained(TINY_MODEL_DIR / "text_encoder"),
            "tokenizer": CLIPTokenizer.from_pretrained(TINY_MODEL_DIR / "tokenizer"),
            "unet": UNet2DConditionModel.from_config({**config, "in_channels": in_channels}),
            "scheduler": EulerDiscreteScheduler.from_pretrained(TINY_MODEL_DIR / "scheduler")}
