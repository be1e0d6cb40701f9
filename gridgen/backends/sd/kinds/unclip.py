"""unCLIP image variations (SD 2.1 unCLIP, diffusers' StableUnCLIPImg2ImgPipeline): an unCLIP model's cell
checks, its image parts, the CLIP image embedding of each init image, and the batched denoising.

An unCLIP UNet is a 4-channel txt2img UNet that also reads a CLIP image embedding through its class
embedding (`class_embed_type` "projection"; `locate` tells such a folder apart). Each init image is
embedded once by the model's CLIP vision encoder (embeddings are kept by the image's bytes); a cell's
`noise_level` then noises its embedding on the model's image-noising schedule, between the
normaliser's scale and unscale, and the level's sinusoidal embedding is appended. The unconditional
half of classifier-free guidance gets an all-zero embedding, as in diffusers. Latents start from
noise at the batch's size (the UNet's own unless width/height say), txt2img-style.

Each cell's generator draws its embedding noise, then its latents, then any step noise: the order
diffusers' pipeline draws them from one generator, so a cell matches that pipeline and renders the
same alone or in any batch. Cells of different images, noise levels, prompts, seeds and CFG scales
share one UNet batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridgen.backends.base import ParamProblem
from gridgen.backends.sd.images.inputs import ImageInputs
from gridgen.backends.sd.kinds.base import Batch, Kind, unchanged
from gridgen.backends.sd.models.locate import ModelInfo
from gridgen.backends.sd.models.model_cache import modified
from gridgen.backends.sd.text.encoding_cache import EncodingCache
from gridgen.errors import ModelError

if TYPE_CHECKING:
    import torch

    from gridgen.backends.sd.denoise.guidance import Guide
    from gridgen.backends.sd.denoise.recipe import Recipe


@lru_cache(maxsize=64)
def max_noise_level(model: Path) -> int:
    """The highest noise level the model's image-noising scheduler has a timestep for."""
    config = model / "image_noising_scheduler" / "scheduler_config.json"
    try:
        steps = json.loads(config.read_text(encoding="utf-8")).get("num_train_timesteps", 1000)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {config}: {exc}; re-download the unCLIP model folder") from exc
    return int(steps) - 1


def problems(params: dict[str, Any], info: ModelInfo) -> list[ParamProblem]:
    """An unCLIP cell's missing or misplaced inputs, and a `noise_level` out of the range its model reads."""
    model, level = params["model"], int(params["noise_level"])
    found = []
    if not params.get("init_image"):
        found.append(ParamProblem("init_image", f"model {model!r} is an unCLIP model: it draws variations of an "
                                                f"image; set init_image to that image (the prompt is optional)"))
    if params.get("mask"):
        found.append(ParamProblem("mask", f"mask is set, but model {model!r} is an unCLIP model, which redraws the "
                                          f"whole init_image from its CLIP embedding; drop mask, or use an "
                                          f"inpainting model"))
    try:
        limit = max_noise_level(info.path)
    except ModelError as exc:
        return [*found, ParamProblem("model", str(exc))]
    if level > limit:
        found.append(ParamProblem("noise_level", f"noise_level {level} is over the maximum of unCLIP model "
                                                 f"{model!r} ({limit}: its image_noising_scheduler has {limit + 1} "
                                                 f"timesteps); use 0 to {limit}"))
    return found


@dataclass
class ImageParts:
    """What an unCLIP model adds to a Stable Diffusion model, loaded."""

    processor: Any  # CLIPImageProcessor: resizes, crops and normalises an image for the encoder
    encoder: Any  # CLIPVisionModelWithProjection
    mean: torch.Tensor  # the normaliser's statistics of the embeddings, (1, D) fp32
    std: torch.Tensor
    noising: Any  # the image-noising scheduler (DDPM in SD 2.1 unCLIP)


def load_image_parts(model: Path, device: torch.device, dtype: torch.dtype) -> ImageParts:
    """The image parts of the unCLIP folder `model`; raises ModelError."""
    import diffusers
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    try:
        index = json.loads((model / "model_index.json").read_text(encoding="utf-8"))
        # Noising follows the declared scheduler's add_noise: schedulers noise differently at the same level.
        noising_class = getattr(diffusers, index["image_noising_scheduler"][1])
        noising = noising_class.from_pretrained(model / "image_noising_scheduler", local_files_only=True)
        processor = CLIPImageProcessor.from_pretrained(model / "feature_extractor", local_files_only=True)
        encoder = CLIPVisionModelWithProjection.from_pretrained(model / "image_encoder", local_files_only=True)
        normalizer = StableUnCLIPImageNormalizer.from_pretrained(model / "image_normalizer", local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise ModelError(f"cannot load the image encoder parts of unCLIP model {model}: {exc}; check that it is a "
                         f"complete StableUnCLIPImg2ImgPipeline folder (re-download it)") from exc
    encoder.to(device=device, dtype=dtype).eval()
    statistics = (normalizer.mean.detach().float().to(device), normalizer.std.detach().float().to(device))
    return ImageParts(processor, encoder, *statistics, noising)


class ImageVariations:
    """The current unCLIP model's image parts and the embeddings of the images it has seen.

    One model's parts at a time: they load with the first batch of an unCLIP model and stay until
    another unCLIP model's batch or `close`; its embeddings go with them.
    """

    def __init__(self):
        self._loaded: tuple[tuple, ImageParts] | None = None
        self.embeddings = EncodingCache()  # CLIP image embeddings by the image file's hash

    def parts(self, model: Path, device: torch.device, dtype: torch.dtype) -> ImageParts:
        key = (model, modified(model), device, dtype)
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None  # the old encoder goes before the next one loads
            self.embeddings.clear()
            self._loaded = (key, load_image_parts(model, device, dtype))
        return self._loaded[1]

    def embed(self, parts: ImageParts, batch: Sequence[dict[str, Any]], inputs: ImageInputs) -> torch.Tensor:
        """(N, D) fp32 CLIP image embeddings of the batch's init images, each distinct image encoded once."""
        import torch

        images, digests = {}, []
        for params in batch:
            image, digest = inputs.read("init_image", params["init_image"])
            images.setdefault(digest, image)
            digests.append(digest)

        def encode(missing: list[str]) -> list[torch.Tensor]:
            pictures = [images[digest].convert("RGB") for digest in missing]
            pixels = parts.processor(images=pictures, return_tensors="pt").pixel_values
            rows = parts.encoder(pixels.to(device=parts.encoder.device, dtype=parts.encoder.dtype)).image_embeds
            return list(rows.float())

        return torch.stack(self.embeddings.lookup(digests, encode))

    def class_labels(self, parts: ImageParts, embeddings: torch.Tensor, levels: Sequence[int],
                     generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Each row's embedding noised to its level (drawing from its generator), then the level's own embedding."""
        import torch
        from diffusers.models.embeddings import get_timestep_embedding

        device, width = embeddings.device, embeddings.shape[1]
        noise = torch.cat([torch.randn((1, width), generator=g, dtype=torch.float32) for g in generators])
        level = torch.tensor([int(n) for n in levels], dtype=torch.long, device=device)
        normalised = (embeddings - parts.mean) / parts.std
        noised = parts.noising.add_noise(normalised, noise.to(device), level) * parts.std + parts.mean
        return torch.cat([noised, get_timestep_embedding(level, width, flip_sin_to_cos=True,
                                                         downscale_freq_shift=0)], dim=1)

    def denoise(self, parts, model: Path, batch: Sequence[dict[str, Any]], inputs: ImageInputs, recipe: Recipe,
                guide: Guide, size: tuple[int, int]) -> torch.Tensor:
        """The batch's denoised latents. `parts` are the loaded model's components."""
        import torch

        image_parts = self.parts(model, parts.device, parts.dtype)
        labels = self.class_labels(image_parts, self.embed(image_parts, batch, inputs),
                                   [int(p["noise_level"]) for p in batch], recipe.generators)
        recipe.full_schedule(int(batch[0]["steps"]))
        factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        width, height = size
        latents = recipe.start_from_noise((parts.unet.config.in_channels, height // factor, width // factor))
        labels = labels.to(parts.unet.dtype)
        return recipe.run(guide(class_labels=labels, uncond_class_labels=torch.zeros_like(labels)), latents)

    def stats(self) -> list[str]:
        if self._loaded is None:
            return []
        return [f"image embeddings: {self.embeddings.hits} cached, {self.embeddings.misses} encoded"]

    def close(self) -> None:
        self._loaded = None
        self.embeddings.clear()


class UnClip(Kind):
    """Image variations: txt2img-style latents from noise, the init image's CLIP embedding as the class input."""

    name = "unclip"
    base_reads = frozenset({"noise_level"})

    def problems(self, params, info, services):
        return problems(params, info)

    def batch_part(self, params):
        return ("unclip",)

    def denoise(self, batch: Batch):
        latents = batch.services.variations.denoise(batch.parts, batch.info.path, batch.cells, batch.inputs,
                                                    batch.recipe, batch.guide, batch.size)
        return latents, [unchanged] * len(batch.cells)


KIND = UnClip()
