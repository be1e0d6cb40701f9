"""The ELLA Timestep-aware Semantic Connector (TSC) as a diffusers model, and its checkpoint layout.

ELLA (Tencent, "Equip Diffusion Models with LLM for Enhanced Semantic Alignment") turns frozen T5
features into the UNet's cross-attention context, recomputed at every denoising step: a Perceiver
resampler whose 64 learned latents attend to the text and are modulated by the timestep through
adaptive layer norms. The parameter names below are those of the official
`ella-sd1.5-tsc-t5xl.safetensors` (no prefix), so that file loads strictly; the widths are
configurable (defaults: the official sizes) so tests can build a small one.

This module owns the network, the layout check that names the first mismatching key, and loading
weights from a single safetensors file or a `save_pretrained` folder.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from gridgen.errors import ModelError

# A single-file checkpoint gridgen writes records its sizes under this safetensors metadata key;
# the official file has none and gets the default (official) sizes.
CONFIG_METADATA_KEY = "gridgen_ella_config"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # the weights file of a save_pretrained folder


class AdaptiveLayerNorm(nn.Module):
    """LayerNorm without affine whose shift and scale come from the timestep embedding."""

    def __init__(self, width: int, time_embed_dim: int):
        super().__init__()
        self.linear = nn.Linear(time_embed_dim, 2 * width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, time_embedding: torch.Tensor) -> torch.Tensor:
        shift, scale = self.linear(F.silu(time_embedding)).chunk(2, dim=-1)  # each (B, 1, width)
        return self.norm(x) * (1 + scale) + shift


class SquaredReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


class PerceiverBlock(nn.Module):
    """Latents attend to [latents, text] (both time-normalised), then a squared-ReLU MLP."""

    def __init__(self, width: int, heads: int, time_embed_dim: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("sq_relu", SquaredReLU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_1 = AdaptiveLayerNorm(width, time_embed_dim)
        self.ln_2 = AdaptiveLayerNorm(width, time_embed_dim)
        self.ln_ff = AdaptiveLayerNorm(width, time_embed_dim)

    def forward(self, text: torch.Tensor, latents: torch.Tensor, time_embedding: torch.Tensor,
                key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        normed = self.ln_1(latents, time_embedding)
        keys = torch.cat([normed, self.ln_2(text, time_embedding)], dim=1)
        attended, _ = self.attn(normed, keys, keys, key_padding_mask=key_padding_mask, need_weights=False)
        latents = latents + attended
        return latents + self.mlp(self.ln_ff(latents, time_embedding))


class PerceiverResampler(nn.Module):
    """`num_latents` learned queries, shifted by the timestep, read the projected T5 features."""

    def __init__(self, width: int, layers: int, heads: int, num_latents: int, input_dim: int, time_embed_dim: int):
        super().__init__()
        self.latents = nn.Parameter(width**-0.5 * torch.randn(num_latents, width))
        self.time_aware_linear = nn.Linear(time_embed_dim, width)
        self.proj_in = nn.Linear(input_dim, width)
        self.perceiver_blocks = nn.ModuleList(PerceiverBlock(width, heads, time_embed_dim) for _ in range(layers))

    def forward(self, text: torch.Tensor, time_embedding: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        latents = self.latents.unsqueeze(0).expand(len(text), -1, -1)
        latents = latents + self.time_aware_linear(F.silu(time_embedding))
        text = self.proj_in(text)
        padding = None
        if text_mask is not None:
            # The latents are always attended to; padded text positions never are.
            keep = torch.ones(latents.shape[:2], dtype=torch.bool, device=text.device)
            padding = ~torch.cat([keep, text_mask.to(torch.bool)], dim=1)
        for block in self.perceiver_blocks:
            latents = block(text, latents, time_embedding, padding)
        return latents


class EllaModel(ModelMixin, ConfigMixin):
    """ELLA's TSC: (T5 features B x L x input_dim, timestep) -> UNet context B x num_latents x width."""

    @register_to_config
    def __init__(self, time_channel: int = 320, time_embed_dim: int = 768, width: int = 768, layers: int = 6,
                 heads: int = 8, num_latents: int = 64, input_dim: int = 2048):
        super().__init__()
        self.position = Timesteps(time_channel, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_channel, time_embed_dim, act_fn="silu")
        self.connector = PerceiverResampler(width, layers, heads, num_latents, input_dim, time_embed_dim)

    def forward(self, text: torch.Tensor, timestep: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`text_mask` (B x L, true where a token is real) lets rows of different lengths share a batch."""
        sinusoid = self.position(timestep.reshape(-1)).to(text.device, text.dtype)
        time_embedding = self.time_embedding(sinusoid.expand(len(text), -1)).unsqueeze(1)  # B x 1 x dim
        return self.connector(text, time_embedding, text_mask)


def expected_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of an EllaModel with `config`, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = EllaModel(**config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def layout_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str | None:
    """The first way `found` differs from `expected`, naming the key; None when they match exactly."""
    for name, shape in expected.items():
        if name not in found:
            return f"key {name!r} is missing (expected shape {list(shape)})"
        if tuple(found[name]) != shape:
            return f"key {name!r} has shape {list(found[name])}, expected {list(shape)}"
    for name in found:
        if name not in expected:
            return f"key {name!r} is not part of ELLA's layout"
    return None


def _weights_file(path: Path) -> Path:
    return path / WEIGHTS_NAME if path.is_dir() else path


def read_config(path: Path) -> dict:
    """The sizes of the ELLA checkpoint at `path` (a single file or a save_pretrained folder), without weights."""
    from safetensors import SafetensorError, safe_open

    try:
        if path.is_dir():
            saved = json.loads((path / EllaModel.config_name).read_text(encoding="utf-8"))
        else:
            with safe_open(str(path), framework="pt") as handle:
                saved = json.loads((handle.metadata() or {}).get(CONFIG_METADATA_KEY, "{}"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelError(f"cannot read ELLA checkpoint {path}: {exc}; re-download ella-sd1.5-tsc-t5xl.safetensors") \
            from exc
    defaults = default_config()
    return {**defaults, **{key: value for key, value in saved.items() if key in defaults}}


def default_config() -> dict:
    """The official ELLA-SD1.5 sizes: EllaModel's constructor defaults."""
    signature = inspect.signature(EllaModel.__init__)
    return {name: p.default for name, p in signature.parameters.items() if name != "self"}


def read_layout(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes stored at `path`, read from the safetensors header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(_weights_file(path)), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as exc:
        raise ModelError(f"cannot read ELLA checkpoint {path}: {exc}; re-download ella-sd1.5-tsc-t5xl.safetensors") \
            from exc


def check_checkpoint(path: Path) -> dict:
    """The checkpoint's config once its layout is ELLA's; raises ModelError naming the first mismatching key."""
    config = read_config(path)
    try:
        expected = expected_layout(config)
    except (AssertionError, ValueError, TypeError) as exc:  # sizes in the metadata that cannot build a model
        raise ModelError(f"ELLA checkpoint {path} records impossible sizes {config}: {exc}") from exc
    problem = layout_mismatch(expected, read_layout(path))
    if problem:
        raise ModelError(f"{path} is not an ELLA checkpoint of the expected layout: {problem}; use the official "
                         f"ella-sd1.5-tsc-t5xl.safetensors (or a folder written by EllaModel.save_pretrained)")
    return config


def save_single_file(model: EllaModel, path: Path) -> None:
    """Write `model` as one safetensors file in the official layout, its sizes kept in the metadata."""
    from safetensors.torch import save_file

    config = {key: model.config[key] for key in default_config()}
    tensors = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(tensors, str(path), metadata={CONFIG_METADATA_KEY: json.dumps(config)})


def load_ella(path: Path, device: torch.device, dtype: torch.dtype) -> EllaModel:
    """Build the TSC at the checkpoint's sizes and load its weights strictly; raises ModelError."""
    from safetensors.torch import load_file

    config = check_checkpoint(path)
    model = EllaModel(**config)
    model.load_state_dict(load_file(str(_weights_file(path))), strict=True)
    return model.to(device=device, dtype=dtype).eval()
