"""The gridgen-tiny model parts and folders: builds the text encoder, VAE and UNet at their tiny sizes, widens a
UNet for a variant's extra input channels, loads a trained txt2img folder, and saves a pipeline folder (UNet and
VAE in fp16, with the word-level tokenizer files) in one rename.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from gridgen.fsutil import replace_dir
from gridgen.tiny import TINY_MODEL_DIR
from gridgen.tiny.tokenizer import MAX_TOKENS, write_tokenizer_files

TEXT_HIDDEN = 64
# SD 1.x's noise schedule, written as the folder's scheduler config. The DDIM/PNDM keys ride along
# (diffusers keeps them as hidden config) so those samplers get SD's settings when built from it.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "timestep_spacing": "leading", "steps_offset": 1,
    "interpolation_type": "linear", "use_karras_sigmas": False,
    "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True,
}


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_HIDDEN, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))


def build_vae():
    from diffusers import AutoencoderKL

    # Factor 4 (three blocks): 64 px images have 16x16 latents, room enough to draw a 16 px shape.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), norm_num_groups=8, mid_block_add_attention=False,
    )


def build_unet(in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    # 16x16 -> 8x8 -> 4x4; attention (self and cross) at 8x8 and 4x4, where it is cheap.
    return UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN, attention_head_dim=32, norm_num_groups=8,
    )


def widen_unet(source, in_channels: int, **changes):
    """A UNet with `source`'s weights and `in_channels` inputs; the added input channels start at zero,
    so training starts from exactly `source`'s predictions. `changes` override config entries."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config({**source.config, "in_channels": in_channels, **changes})
    state = {k: v for k, v in source.state_dict().items() if k != "conv_in.weight"}
    unet.load_state_dict(state, strict=False)
    with torch.no_grad():
        unet.conv_in.weight.zero_()
        unet.conv_in.weight[:, :source.config.in_channels] = source.conv_in.weight
    return unet


def load_txt2img(folder: Path = TINY_MODEL_DIR):
    """(tokenizer, text encoder, vae, unet) of a trained txt2img folder, in fp32, frozen."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    parts = (CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32),
             AutoencoderKL.from_pretrained(folder / "vae", dtype=torch.float32),
             UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32))
    return tokenizer, *(part.eval().requires_grad_(False) for part in parts)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """Scaled latent means of (n, 3, H, W) images in [-1, 1], on the VAE's device."""
    return vae.encode(images.to(vae.device)).latent_dist.mean * vae.config.scaling_factor


def save_txt2img(out: Path, tokenizer, text_encoder, unet, vae) -> Path:
    from diffusers import StableDiffusionPipeline

    return save_variant(StableDiffusionPipeline, out, tokenizer=tokenizer, text_encoder=text_encoder, unet=unet,
                        vae=vae, requires_safety_checker=False)


def save_variant(pipeline_class, out: Path, *, tokenizer, text_encoder, unet, vae, **extra) -> Path:
    """Write a `pipeline_class` folder to `out`, replacing it; `extra` are the class's other arguments.

    The UNet and VAE are stored in fp16 (diffusers loads them in the dtype asked for); the text
    encoder stays fp32, since transformers would otherwise load it, and run it, in fp16. The modules
    passed in are copied, never changed.
    """
    from diffusers import EulerDiscreteScheduler

    pipe = pipeline_class(
        vae=copy.deepcopy(vae).cpu().half(), text_encoder=copy.deepcopy(text_encoder).cpu().float(),
        tokenizer=tokenizer, unet=copy.deepcopy(unet).cpu().half(),
        scheduler=EulerDiscreteScheduler.from_config(SCHEDULER_CONFIG),
        safety_checker=None, feature_extractor=None, **extra,
    )
    return save_pipeline(pipe, out)


def save_pipeline(pipe, out: Path) -> Path:
    """`pipe.save_pretrained` into `out`, replacing it in one rename, with the word-level tokenizer files."""
    with replace_dir(Path(out)) as staged:
        pipe.save_pretrained(staged, safe_serialization=True)
        write_tokenizer_files(staged / "tokenizer")
    return Path(out)
