"""Rendering for the diffusers backend: loading a cell's model, its batch's text conditioning, one batched
denoising pass of its kind, measuring the batch that fits the device, and the speed options on a loaded model.

Kept apart from `diffusers_backend`, which validates and keys cells from configs alone: torch and diffusers load
with this module, at the first render, not when a grid is only validated.
"""

from __future__ import annotations

import gc
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gridgen.backends.sd.adapters import networks
from gridgen.backends.sd.denoise import (
    lora_groups,
    multidiffusion,
    prompt_regions,
    regional,
    regional_attention,
    seamless,
    token_merging,
)
from gridgen.backends.sd.denoise.controls.setup import Controls
from gridgen.backends.sd.denoise.cpu_shards import BatchShards, default_workers
from gridgen.backends.sd.denoise.guidance import Adjust, Context, Guide, guide_for
from gridgen.backends.sd.denoise.recipe import Recipe, scheduler_for
from gridgen.backends.sd.kinds.base import Batch
from gridgen.backends.sd.models.load import Components, load_components, pick_device, pick_dtype
from gridgen.backends.sd.models.model_cache import modified
from gridgen.backends.sd.text import ella_setup
from gridgen.backends.sd.text import regions as regions_text
from gridgen.backends.sd.text.clip_xl import SdxlPromptEncoder, added_conditioning, make_prompt_encoder

if TYPE_CHECKING:
    from gridgen.backends.diffusers_backend import DiffusersBackend


def scheduler_config(config: dict[str, Any], prediction: str) -> dict[str, Any]:
    """The model's scheduler config, with the `prediction` param's choice when it is not auto."""
    return config if prediction == "auto" else {**config, "prediction_type": prediction}


def ensure_loaded(backend: DiffusersBackend, params: dict[str, Any]) -> Components:
    """The cell's model on the device, from the model cache or loaded, with its prompt encoder and adapters."""
    key = backend.load_key(params)
    device = pick_device(backend.context.device)
    dtype = pick_dtype(backend.context.dtype, device)
    model, vae, config = backend._model_path(params), backend._vae_path(params), backend._info(params).config
    # Paths with their modification times (a model replaced on disk loads afresh) and the configs used.
    # LoRAs are adapters on the loaded model (see networks.py), so they are not part of it.
    loaded = (key[:2], str(config), modified(model), modified(vae), str(device), dtype)
    if backend._components is None or loaded != backend._loaded:
        backend.decoder.drain()  # the model cache may move the VAE a decode is using
        # The cache parks the current model first: if this load fails, nothing may pass for loaded.
        backend._components = backend.prompts = backend.networks = backend._loaded = None

        def load():
            parts = load_components(model, vae, device, dtype, config)
            apply_speed_options(backend, parts)
            prompts = make_prompt_encoder(parts)
            return parts, (prompts, networks.Networks(parts, prompts))

        backend._components, (backend.prompts, backend.networks) = backend.models.get(loaded, load)
        backend._loaded = loaded
    backend._load_key = key
    seamless.use_tiling(backend._components, bool(params.get("tiling")), before_change=backend.decoder.drain)
    token_merging.use_ratio(backend._components.unet, token_merging.ratio_of(params))
    return backend._components


@torch.inference_mode()
def denoise_batch(backend: DiffusersBackend, batch: list[dict[str, Any]]
                  ) -> list[tuple[Future, dict[str, Any], dict[str, float]]]:
    """One batched denoising pass of the batch's kind: cells share sampler, steps and size, each keeps its own
    conditioning. Each image is a future: the VAE decode runs on the decoder's thread."""
    first = batch[0]
    parts = backend._ensure_loaded(first)
    kind, info = backend._kind(first)
    width, height = backend._size(first)
    clock = Clock(parts.device)
    factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
    config = scheduler_config(parts.scheduler_config, str(first["prediction"]))

    def recipe_for(cells: list[dict[str, Any]]) -> Recipe:
        return Recipe(scheduler_for(first, config), [int(p["seed"]) for p in cells], parts.device, cells=cells,
                      factor=factor)

    found = prompt_regions.find(parts.unet, backend.prompts, batch,
                                lambda text_rows: conditioning(backend, text_rows, parts, width, height), recipe_for,
                                (height // factor, width // factor))  # prompt-mode cells' regions
    text = text_guidance(backend, parts, batch, (width, height), factor, found)
    text_time = clock.lap()
    recipe = recipe_for(batch)
    vae_folders = [folder for folder in (backend._vae_path(first), info and info.path / "vae") if folder]
    controls = Controls(batch, recipe, vae_folders, bool(info and info.sdxl))
    recipe.hooks += controls.hooks
    # Validation keeps prediction adjustments off regional cells, and the backend denoises regional cells apart
    # from adjusted ones, so a batch whose rows regions widened has no adjustment to apply per row.
    guide = text.guide(backend, parts, batch, controls.adjust)
    windows = multidiffusion.windows(first, info.native_size if info else max(width, height))
    if windows is not None:
        guide = multidiffusion.tiled_guide(guide, windows, factor)
    with regional_attention.installed(parts.unet, text.attention):
        latents, finish = kind.denoise(Batch(batch, parts, info, (width, height), recipe, guide, backend.inputs,
                                             backend))
    denoise_time = clock.lap()

    metadata = {"model_path": backend._load_key[0], "vae": backend._load_key[1], "options": backend.speed_options(),
                "scheduler": type(recipe.scheduler).__name__, "device": str(parts.device),
                "dtype": str(parts.dtype).removeprefix("torch."), "width": width, "height": height}
    share = 1 / len(batch)
    timings = [{"text": text_time * share, "denoise": denoise_time * share} for _ in batch]
    decoded = backend.decoder.submit(parts.vae, latents, finish, timings, str(first["vae_tiling"]))
    loras = lora_metadata(backend, batch, text.text_rows, text.rows)
    return [(image, {**metadata, **loras[index], **ella_setup.metadata(p, backend._resolve), **kind.metadata(p),
                     **({regions_text.FOUND: found[index]} if index in found else {})},
             cell_timings) for index, (p, image, cell_timings) in enumerate(zip(batch, decoded, timings, strict=True))]


@dataclass(frozen=True)
class TextGuidance:
    """What a batch's guidance is built from: the params of its text rows, its guidance rows, and per LoRA group
    the group's rows, their attention-calc inputs and their text conditioning (`encode_group`)."""

    text_rows: list[dict[str, Any]]
    rows: list[regional.Row]
    encoded: list[tuple[lora_groups.Group, list[regional.Row], Any, tuple[Context, Context, dict[str, Any]]]]

    @property
    def attention(self) -> bool:
        """Whether any row needs the regional attention processors installed."""
        return any(attention is not None for _, _, attention, _ in self.encoded)

    def guide(self, backend: DiffusersBackend, parts: Components, batch: list[dict[str, Any]],
              adjust: Adjust | None = None) -> Guide:
        """The batch's guide: each group's, joined (`lora_groups.split_guide`) and widened to the cells."""
        guides = [(group, guide_for(parts.unet, cond, uncond, [float(batch[row.cell]["cfg_scale"]) for row in rows],
                                    adjust=adjust, cross_attention=attention, **text))
                  for group, rows, attention, (cond, uncond, text) in self.encoded]
        return regional.widen(lora_groups.split_guide(guides, backend.networks.use_loras), self.rows, len(batch))


def text_guidance(backend: DiffusersBackend, parts: Components, batch: list[dict[str, Any]], size: tuple[int, int],
                  factor: int, found: dict[int, list] | None = None) -> TextGuidance:
    """The batch's text rows (a row per cell, or per region prompt), grouped by LoRA set and encoded at `size`;
    `found` holds prompt-mode cells' region masks by their place in the batch."""
    text_rows, rows = regional.expand(batch, backend.inputs.load, found)
    groups = lora_groups.groups(rows, text_rows, backend._lora_set)  # rows whose LoRAs differ run apart
    return TextGuidance(text_rows, rows,
                        [encode_group(backend, parts, rows, text_rows, group, size, factor) for group in groups])


@torch.inference_mode()
def redraw_guidance(backend: DiffusersBackend, params: dict[str, Any], size: tuple[int, int]) -> tuple[Guide, bool]:
    """A regional cell's guide at `size` for the stages that redraw its whole image (hires fix), with its regions
    and their LoRAs, and whether it needs the regional attention processors. A prompt-mode cell's found masks come
    in `params` under `regions.FOUND`."""
    parts = backend._ensure_loaded(params)
    factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
    found = {0: params[regions_text.FOUND]} if regions_text.FOUND in params else None
    text = text_guidance(backend, parts, [params], size, factor, found)
    return text.guide(backend, parts, [params]), text.attention


def encode_group(backend: DiffusersBackend, parts: Components, rows: list[regional.Row],
                 text_rows: list[dict[str, Any]], group: lora_groups.Group, size: tuple[int, int], factor: int
                 ) -> tuple[lora_groups.Group, list[regional.Row], Any, tuple[Context, Context, dict[str, Any]]]:
    """One LoRA group's text conditioning, per guidance row, with its attention-calc regions' inputs."""
    group_texts, group_rows = lora_groups.subset(rows, text_rows, group)
    (width, height) = size
    cond, uncond, text = conditioning(backend, group_texts, parts, width, height)
    attention = regional_attention.inputs(group_rows, cond, uncond, text["masks"], (height // factor, width // factor),
                                          parts.unet.dtype)
    return group, group_rows, attention, regional.per_row(group_rows, cond, uncond, text)


def lora_metadata(backend: DiffusersBackend, batch: list[dict[str, Any]], text_rows: list[dict[str, Any]],
                  rows: list[regional.Row]) -> list[dict[str, Any]]:
    """Per cell: `loras`, the (file, weight) pairs applied to all of it, and for a cell whose regions apply LoRAs
    of their own, `region_loras`: each region prompt's pairs (the base prompt's last)."""
    found = []
    for index, params in enumerate(batch):
        cell_loras = backend._lora_set(params)
        texts = sorted({part.text for row in rows if row.cell == index for part in row.parts})
        per_region = [backend._lora_set(text_rows[text]) for text in texts]
        entry = {"loras": [list(pair) for pair in cell_loras]} if cell_loras else {}
        if any(loras != cell_loras for loras in per_region):
            entry["region_loras"] = [[list(pair) for pair in loras] for loras in per_region]
        found.append(entry)
    return found


def conditioning(backend: DiffusersBackend, batch: list[dict[str, Any]], parts: Components, width: int,
                 height: int) -> tuple[Context, Context, dict[str, Any]]:
    """The batch's text conditioning (CLIP, ELLA or both) after its LoRAs and embeddings are in place:
    (cond, uncond, the rest of what `guidance.guided_denoiser` takes about the text)."""
    first = batch[0]
    if backend.networks is not None:
        backend.networks.use_loras(backend._lora_set(first))
        spec_dir, models_dir = Path(backend.context.spec_dir), backend._models_dir()
        backend.networks.use_embeddings({name: path for p in batch
                                      for name, path in networks.embedding_files(p, spec_dir, models_dir).items()})
    skips = [int(p["clip_skip"]) for p in batch]
    prompts = [(str(p["prompt"]), s) for p, s in zip(batch, skips, strict=True)]
    negatives = [(str(p["negative_prompt"]), s) for p, s in zip(batch, skips, strict=True)]
    clip = None
    if not ella_setup.enabled(first) or str(first["ella_mode"]) == "ella+clip":
        clip = backend.prompts.conditioning(prompts, negatives)
    if ella_setup.enabled(first):
        cond, uncond, masks = backend.ella.conditioning(batch, backend._resolve, parts.device, parts.dtype, clip)
    else:
        cond, uncond, masks = clip.cond, clip.uncond, (clip.cond_mask, clip.uncond_mask)
    added = (None, None)
    if isinstance(backend.prompts, SdxlPromptEncoder):
        added = (added_conditioning(backend.prompts.pooled(prompts), width, height),
                 added_conditioning(backend.prompts.negative_pooled(negatives), width, height))
    return cond, uncond, {"masks": masks, "added_cond": added[0], "added_uncond": added[1]}


@torch.inference_mode()
def fit_batch(backend: DiffusersBackend, params: dict[str, Any], wanted: int) -> int:
    """The largest batch up to `wanted` whose denoising fits the device's free memory.

    Measured, not guessed: one UNet pass at one and at two guided cells gives the memory a cell
    adds; CPU memory is not probed (the executor's batch size stands there).
    """
    if pick_device(backend.context.device).type != "cuda":
        return wanted
    parts = backend._ensure_loaded(params)
    kind, _ = backend._kind(params)
    backend.decoder.drain()  # its memory would count against the batch being measured
    if ella_setup.enabled(params):
        backend.ella.load(params, backend._resolve, parts.device, parts.dtype)  # its memory is taken before measuring
    width, height = backend._size(params)
    factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
    shape = (parts.unet.config.in_channels, height // factor, width // factor)
    empty = [("", int(params["clip_skip"]))]
    context = backend.prompts.encode(empty)[0].unsqueeze(0)
    pooled = backend.prompts.pooled(empty) if isinstance(backend.prompts, SdxlPromptEncoder) else None

    def peak(cells: int) -> int:
        torch.cuda.synchronize(parts.device)
        torch.cuda.reset_peak_memory_stats(parts.device)
        rows = kind.guidance_rows * cells  # the conditional and unconditional halves, and any more of the kind
        x = torch.zeros((rows, *shape), device=parts.device, dtype=parts.unet.dtype)
        added = added_conditioning(pooled.expand(rows, -1), width, height) if pooled is not None else None
        labels = None
        if parts.unet.config.class_embed_type == "projection":  # unCLIP's image embedding
            labels = torch.zeros((rows, parts.unet.config.projection_class_embeddings_input_dim),
                                 device=parts.device, dtype=parts.unet.dtype)
        elif parts.unet.config.num_class_embeds:  # the x4 upscaler's noise level
            labels = torch.zeros(rows, device=parts.device, dtype=torch.long)
        parts.unet(x, torch.tensor(999, device=parts.device), encoder_hidden_states=context.expand(rows, -1, -1),
                   added_cond_kwargs=added, class_labels=labels)
        torch.cuda.synchronize(parts.device)
        return torch.cuda.max_memory_allocated(parts.device)

    one, two = peak(1), peak(2)
    per_cell = max(two - one, 1)
    free, _ = torch.cuda.mem_get_info(parts.device)
    # The VAE decode of the batch and allocator fragmentation need room too: keep a fifth free.
    fits = int((0.8 * free + two - torch.cuda.memory_allocated(parts.device)) // per_cell)
    return max(1, min(wanted, fits))


def apply_speed_options(backend: DiffusersBackend, parts: Components) -> None:
    if backend.context.channels_last:
        parts.unet.to(memory_format=torch.channels_last)
        parts.vae.to(memory_format=torch.channels_last)
    if backend.context.compile:
        # Static shapes: each batch key (size, batch length) compiles once and is reused for its cells.
        parts.unet.forward = torch.compile(parts.unet.forward, dynamic=False)
        parts.vae.decode = torch.compile(parts.vae.decode, dynamic=False)
    workers = backend.context.cpu_shards or default_workers()
    if parts.device.type == "cpu" and workers > 1:
        backend.shards = backend.shards or BatchShards(workers)
        parts.unet.forward = backend.shards.wrap(parts.unet.forward)


def free_device_memory() -> None:
    # Only the CUDA allocator holds freed blocks back for reuse; a full collection takes a fifth of a
    # second, which is no cost worth paying for the CPU, where reference counting already freed the rest.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


class Clock:
    """Wall time between laps, waiting for queued GPU work so each lap is charged to its own stage."""

    def __init__(self, device: torch.device):
        self.device = device
        self.last = time.perf_counter()

    def lap(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed
