"""The built-in `diffusers` backend: Stable Diffusion txt2img, img2img, inpaint, depth2img, instruct-pix2pix, unCLIP
variations and the x4 upscaler on diffusers' models and schedulers.

It validates a cell's params from config files alone, keeps the last model loaded, and renders a
batch of cells that share a sampler, step count and size while each keeps its own prompt,
negative prompt, seed, CFG scale and CLIP skip. The pieces live in `gridgen.backends.sd`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Hashable, Iterator
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from gridgen.backends import diffusers_paths
from gridgen.backends.base import BackendContext, BatchOutOfMemory, ParamProblem, Result
from gridgen.backends.sd import (
    depth2img,
    edit,
    ella_setup,
    images,
    instruct_pix2pix,
    networks,
    sampling,
    unclip,
    wildcards,
    x4_kind,
)
from gridgen.backends.sd.cpu_shards import BatchShards, default_workers
from gridgen.backends.sd.decoding import Decoder, Finish
from gridgen.backends.sd.depth import DEPTH_PARAMS, DepthMaps
from gridgen.backends.sd.inputs import ImageInputs
from gridgen.backends.sd.kinds import kind_problems
from gridgen.backends.sd.load import Components, load_components, pick_device, pick_dtype
from gridgen.backends.sd.locate import ModelInfo, read_model_info, resolve_model, resolve_vae, vae_factor
from gridgen.backends.sd.lora import LoraError
from gridgen.backends.sd.model_cache import ModelCache, modified
from gridgen.backends.sd.segment_stage import SamStage
from gridgen.backends.sd.text import PromptEncoder
from gridgen.backends.sd.text_xl import SdxlPromptEncoder, added_conditioning, make_prompt_encoder
from gridgen.backends.sd.upscale_stage import UpscaleStage
from gridgen.cache import StageCache, stage_key
from gridgen.errors import ModelError
from gridgen.params import Registry
from gridgen.samplers import make_scheduler, scheduler_choice, unsupported_schedule
from gridgen.upscalers import parse_upscaler

if TYPE_CHECKING:
    from gridgen.backends.base import Cell
    from gridgen.params import Param

SUPPORTED_PARAMS = frozenset({
    "prompt", "negative_prompt", "prompt_replace", "seed", "steps", "cfg_scale", "sampler", "schedule",
    "width", "height", "out_width", "out_height", "model", "vae", "clip_skip", "format", "upscaler", "upscale_by",
    "ella", "ella_text_encoder", "token_length", "ella_mode", "lora", "embedding", "pipeline", "prediction",
})
UPSCALE_PARAMS = frozenset({"upscale_width", "upscale_height", "tile_size", "tile_overlap", "noise_level",
                            "upscale_prompt", "upscale_steps", "upscale_cfg_scale", "hires_steps", "hires_denoise"})
SUPPORTED_PARAMS |= UPSCALE_PARAMS
EDIT_PARAMS = frozenset({"init_image", "denoise", "mask", "mask_blur", "inpaint_full_res", "padding_mask_crop",
                         "inpainting_fill"})
SAM_PARAMS = frozenset({"sam_prompt", "sam_model", "sam_mask", "dilate", "inpaint_mode", "inpainter"})
SUPPORTED_PARAMS |= EDIT_PARAMS | SAM_PARAMS | frozenset(DEPTH_PARAMS)
SUPPORTED_PARAMS |= {"image_cfg_scale"}
# Params only the stages after base generation read: cells differing only in these share a base image.
POST_PARAMS = frozenset({"upscaler", "upscale_by", "out_width", "out_height", "format", "prompt_replace"})
POST_PARAMS |= UPSCALE_PARAMS | SAM_PARAMS
_DEFAULTS = Registry().defaults()


def scheduler_config(config: dict[str, Any], prediction: str) -> dict[str, Any]:
    """The model's scheduler config, with the `prediction` param's choice when it is not auto."""
    return config if prediction == "auto" else {**config, "prediction_type": prediction}


def has_post_stages(params: dict[str, Any]) -> bool:
    """Whether a cell's image goes on from its base render: a SAM edit, an upscaler or a resize."""
    return bool(params.get("sam_prompt") or params.get("out_width") or params.get("out_height")
                or parse_upscaler(str(params["upscaler"])).name != "none")


def base_params(params: dict[str, Any], reads_noise_level: bool = False) -> dict[str, Any]:
    """The params a cell's base image depends on; `reads_noise_level` for a model kind that reads noise_level."""
    # In a SAM edit the inpainting params belong to the edit, not to the base image it starts from.
    later = POST_PARAMS | (EDIT_PARAMS - {"init_image"} if params.get("sam_prompt") else frozenset())
    if reads_noise_level:  # unCLIP (its image embedding) and the x4 upscaler (its low-res image): no start latents
        later = later - {"noise_level"} | {"denoise"}
    return ella_setup.stage_params({name: value for name, value in params.items() if name not in later})


class DiffusersBackend:
    name = "diffusers"

    def __init__(self, context: BackendContext):
        self.context = context
        self._load_key: Hashable | None = None
        self._loaded: Hashable | None = None  # the model cache's key of what is loaded
        self._components: Components | None = None
        self.prompts: PromptEncoder | SdxlPromptEncoder | None = None  # the loaded model's text-embedding cache
        self.ella = ella_setup.EllaRuntime()
        self.variations = unclip.ImageVariations()
        self.networks: networks.Networks | None = None  # the loaded model's embeddings and LoRAs
        self._resolved: dict[tuple, Path | None | ModelError] = {}
        spill = Path(context.out_dir) / ".cache" if context.out_dir else None
        self.cache = StageCache(context.cache_bytes, spill)
        self.models = ModelCache(context.model_cache_bytes)
        self.inputs = ImageInputs(Path(context.spec_dir))
        self.upscaling = UpscaleStage(context, self.cache, self._loaded_model)
        self.segmenting = SamStage(context, self.cache)
        self.shards: BatchShards | None = None  # CPU batch sharding, made on the first CPU load
        self.decoder = Decoder()
        self.depths = DepthMaps(context, self.cache, self.inputs, self._resolve)

    def supported_params(self) -> set[str]:
        return set(SUPPORTED_PARAMS)

    def extra_params(self) -> list[Param]:
        return []

    def locate(self, param: str, value: str) -> Path | None:
        return diffusers_paths.locate(self.context, param, value)

    # Resolution: the same answers for validate, the keys and render.

    def _model_path(self, params: dict[str, Any]) -> Path:
        return self._resolve(resolve_model, str(params["model"]))

    def _vae_path(self, params: dict[str, Any]) -> Path | None:
        return self._resolve(resolve_vae, str(params["vae"]))

    def _resolve(self, resolver, value: str):
        # Failed lookups are remembered too: a grid repeats the same missing name in every cell.
        key = (resolver, value, self.context.spec_dir, self.context.models_dir)
        if key not in self._resolved:
            try:
                self._resolved[key] = resolver(value, Path(self.context.spec_dir), self._models_dir())
            except ModelError as exc:
                self._resolved[key] = exc
        found = self._resolved[key]
        if isinstance(found, ModelError):
            raise found.with_traceback(None)  # one cached error, raised afresh each time
        return found

    def _models_dir(self) -> Path | None:
        return Path(self.context.models_dir) if self.context.models_dir else None

    def _wildcard_folders(self) -> list[Path]:
        return wildcards.folders(Path(self.context.spec_dir), self._models_dir())

    def _info(self, params: dict[str, Any]) -> ModelInfo:
        return read_model_info(self._model_path(params), str(params.get("prediction") or "auto"))

    def _is_unclip(self, params: dict[str, Any]) -> bool:
        try:
            return self._info(params).unclip
        except ModelError:
            return False  # validate() reports the model

    def _reads_noise_level(self, params: dict[str, Any]) -> bool:
        """Whether the cell's model kind reads noise_level for its base image (unCLIP, the x4 upscaler)."""
        try:
            info = self._info(params)
        except ModelError:
            return False  # validate() reports the model
        return info.unclip or x4_kind.is_x4(info.in_channels)

    def _size(self, params: dict[str, Any]) -> tuple[int, int]:
        if params.get("width") and params.get("height"):
            return int(params["width"]), int(params["height"])
        try:
            info = self._info(params)
        except ModelError:
            info = None  # validate() reports the missing model; planning goes on
        if info and x4_kind.is_x4(info.in_channels):
            return x4_kind.output_size(params, self.inputs, info.vae_factor) or (info.native_size,) * 2
        # An unCLIP variation starts from noise at the UNet's size, whatever its init image's.
        found = None if info and info.unclip else edit.init_size(params, self.inputs, info.vae_factor if info else 8)
        if found:
            return found
        native = info.native_size if info else 0
        return int(params.get("width") or native), int(params.get("height") or native)

    def validate(self, params: dict[str, Any]) -> list[ParamProblem]:
        params = {**_DEFAULTS, **params}
        problems: list[ParamProblem] = []
        info = None
        try:
            info = self._info(params)
        except ModelError as exc:
            problems.append(ParamProblem("model", str(exc)))
        else:
            problems += kind_problems(params, str(params["model"]), info.in_channels, info.sdxl, info.unclip)
        factor = info.vae_factor if info else None
        try:
            vae = self._vae_path(params)
            factor = vae_factor(vae) if vae and vae.is_dir() else factor
        except ModelError as exc:
            problems.append(ParamProblem("vae", str(exc)))
        try:
            reason = unsupported_schedule(str(params["sampler"]), str(params["schedule"]))
        except ValueError as exc:
            problems.append(ParamProblem("sampler", str(exc)))
        else:
            if reason:
                problems.append(ParamProblem("schedule", reason))
        for side in ("width", "height"):
            value = params.get(side)
            if factor and value is not None and (value < 8 * factor or value % factor):
                problems.append(ParamProblem(side, f"{side} {value} does not fit this model: it must be at least "
                                                   f"{8 * factor} and a multiple of {factor} (the VAE's scale)"))
        for field in ("prompt", "negative_prompt"):
            problems += [ParamProblem(field, message)
                         for message in wildcards.problems(str(params[field]), self._wildcard_folders())]
        problems += [ParamProblem("lora", message, severity) for severity, message in
                     networks.lora_problems(params.get("lora"), Path(self.context.spec_dir), self._models_dir())]
        problems += [ParamProblem(param, message) for param, message in
                     networks.embedding_problems(params, Path(self.context.spec_dir), self._models_dir(),
                                                 info.config if info else None, bool(info and info.sdxl))]
        clip_skip = int(params["clip_skip"])
        if info and clip_skip > info.text_layers:
            problems.append(ParamProblem("clip_skip", f"clip_skip {clip_skip} is more than the {info.text_layers} "
                                                      f"layers of this model's text encoder"))
        problems += ella_setup.check_cell(params, info.path if info else None, self._resolve)
        problems += self.inputs.check(params)
        channels = info.in_channels if info else None
        problems += [ParamProblem(name, message) for name, message in edit.problems(params, channels)]
        if info and depth2img.is_depth2img(info.in_channels):
            problems += depth2img.problems(params, info.path, self.depths)
        problems += [ParamProblem(name, message)
                     for name, message in instruct_pix2pix.problems(params, str(params["model"]), channels)]
        problems += unclip.problems(params, info)
        problems += x4_kind.problems(params, info)
        sam_input = self.inputs.size(params["init_image"]) if params.get("init_image") else self._size(params)
        problems += self.segmenting.validate(params, sam_input)
        return problems + self.upscaling.validate(params)

    def load_key(self, params: dict[str, Any]) -> Hashable:
        # Planning asks for keys before validation has spoken, so an unresolvable name stands for itself.
        params = {**_DEFAULTS, **params}
        try:
            model = str(self._model_path(params))
        except ModelError:
            model = str(params["model"])
        try:
            vae = self._vae_path(params)
            vae_key = str(vae) if vae else "auto"
        except ModelError:
            vae_key = str(params["vae"])
        return model, vae_key, tuple(file for file, _ in self._lora_set(params))

    def _lora_set(self, params: dict[str, Any]) -> networks.LoraSet:
        try:
            return networks.lora_set(params.get("lora"), Path(self.context.spec_dir), self._models_dir())
        except LoraError:
            return tuple((value, 0.0) for value in params.get("lora") or [])  # validate() reports it

    def describe_load(self, params: dict[str, Any]) -> str:
        model, vae, loras = self.load_key(params)
        return f"model {model} (vae {vae})" + (f" + lora {', '.join(loras)}" if loras else "")

    def _as_read(self, params: dict[str, Any]) -> dict[str, Any]:
        """The params as the model's kind reads them (validate() reports a model that cannot be read)."""
        try:
            channels = self._info(params).in_channels
        except ModelError:
            return params
        return x4_kind.as_read(instruct_pix2pix.as_read(params, channels), channels)

    def batch_key(self, params: dict[str, Any]) -> Hashable:
        params = self._as_read({**_DEFAULTS, **params})
        # The scheduler choice, not the sampler's name: names that build the same scheduler can share a batch.
        choice = scheduler_choice(str(params["sampler"]), str(params["schedule"]))
        # One LoRA set and weights per batch: adapter weights apply to the whole UNet call.
        return (self.load_key(params), self._lora_set(params), choice, str(params["prediction"]), int(params["steps"]),
                *self._size(params), ella_setup.batch_part(params, self._resolve),
                ("unclip",) if self._is_unclip(params) else edit.batch_part(params))

    def render(self, cells: list[Cell]) -> Iterator[Result]:
        size = max(1, int(self.context.max_batch))
        for start in range(0, len(cells), size):
            # The batch is finished before anything is yielded, so no torch mode leaks into the caller.
            yield from self._render_batch(cells[start:start + size])

    def _ensure_loaded(self, params: dict[str, Any]) -> Components:
        key = self.load_key(params)
        device = pick_device(self.context.device)
        dtype = pick_dtype(self.context.dtype, device)
        model, vae, config = self._model_path(params), self._vae_path(params), self._info(params).config
        # Paths with their modification times (a model replaced on disk loads afresh) and the configs used.
        # LoRAs are adapters on the loaded model (see networks.py), so they are not part of it.
        loaded = (key[:2], str(config), modified(model), modified(vae), str(device), dtype)
        if self._components is None or loaded != self._loaded:
            self.decoder.drain()  # the model cache may move the VAE a decode is using
            # The cache parks the current model first: if this load fails, nothing may pass for loaded.
            self._components = self.prompts = self.networks = self._loaded = None

            def load():
                parts = load_components(model, vae, device, dtype, config)
                self._apply_speed_options(parts)
                prompts = make_prompt_encoder(parts)
                return parts, (prompts, networks.Networks(parts, prompts))

            self._components, (self.prompts, self.networks) = self.models.get(loaded, load)
            self._loaded = loaded
        self._load_key = key
        return self._components

    def _loaded_model(self, params: dict[str, Any]) -> tuple[Components, PromptEncoder]:
        """The cell's model and its prompt cache, for stages that run it again (hires fix, SD upscale)."""
        return self._ensure_loaded(params), self.prompts

    def _base_key(self, params: dict[str, Any]) -> str:
        if edit.mode_of(params) == "input":  # the file as it is: only its bytes matter
            return stage_key("input", {}, self.inputs.fingerprint(params))
        return stage_key("txt2img", base_params(self._as_read(params), self._reads_noise_level(params)),
                         f"{self.load_key(params)}{self.inputs.fingerprint(params)}")

    def _render_batch(self, cells: list[Cell]) -> list[Result]:
        """Base images from the stage cache or one denoising batch, then each cell's post stages."""
        batch = [wildcards.expand_params({**_DEFAULTS, **cell.params}, self._wildcard_folders()) for cell in cells]
        keys = [self._base_key(p) for p in batch]
        bases: dict[str, tuple[Image.Image | Future, dict[str, Any], dict[str, float]]] = {}  # a render's is a Future
        for key, params in zip(keys, batch, strict=True):
            if edit.mode_of(params) == "input":  # a SAM edit's own input image: nothing to generate
                bases[key] = (self.inputs.load("init_image", params["init_image"]), {}, {})
        for key in dict.fromkeys(keys):
            hit = self.cache.get(key)
            if hit is not None:
                bases[key] = (*hit, {})
        # Cells that differ only in later stages share one base render, within a batch and across batches.
        todo = {key: params for key, params in zip(keys, batch, strict=True) if key not in bases}
        self.cache.stats.hits += len(keys) - len(set(keys))  # cells served by another cell of this batch
        if todo:
            try:
                rendered = self._denoise(list(todo.values()))
            except torch.OutOfMemoryError as exc:
                self._free_device_memory()
                raise BatchOutOfMemory(len(todo)) from exc
            for key, (image, metadata, timings) in zip(todo, rendered, strict=True):
                image.add_done_callback(partial(self._cache_decoded, key, metadata))
                bases[key] = (image, metadata, timings)
        results = []
        for cell, params, key in zip(cells, batch, keys, strict=True):
            base, base_metadata, timings = bases[key]
            if not has_post_stages(params):  # the image goes to the writers as a future: nothing here waits
                results.append(Result(cell, base, metadata={**base_metadata, **self._cell_metadata(params)},
                                      timings=timings))
                continue
            base = base.result() if isinstance(base, Future) else base
            started = time.perf_counter()
            edited = self.segmenting.apply(base, key, params)
            image = self.upscaling.apply(edited.image, edited.key, params)
            image = images.resize(image, params.get("out_width"), params.get("out_height"))
            metadata = {**base_metadata, **edited.metadata, **self._cell_metadata(params)}
            results.append(Result(cell, image, metadata=metadata,
                                  timings={**timings, "post": time.perf_counter() - started}, files=edited.files))
        return results

    def _cache_decoded(self, key: str, metadata: dict[str, Any], decoded: Future) -> None:
        if decoded.exception() is None:  # a failed decode is reported by the cells' writes
            self.cache.put(key, (decoded.result(), metadata))

    @staticmethod
    def _cell_metadata(params: dict[str, Any]) -> dict[str, Any]:
        metadata = {"model": str(params["model"]), "sampler": str(params["sampler"])}
        if "wildcards" in params:  # the prompts as rendered, and what each wildcard picked
            metadata.update({field: params[field] for field in ("prompt", "negative_prompt", "wildcards")})
        return metadata

    @torch.inference_mode()
    def _denoise(self, batch: list[dict[str, Any]]) -> list[tuple[Future, dict[str, Any], dict[str, float]]]:
        """One batched denoising pass: cells share sampler, steps and size, each keeps its own conditioning.
        Each image is a future: the VAE decode runs on the decoder's thread."""
        first = batch[0]
        parts = self._ensure_loaded(first)
        width, height = self._size(first)
        clock = _Clock(parts.device)
        cond, uncond, text = self._conditioning(batch, parts, width, height)
        text_time = clock.lap()
        scheduler = make_scheduler(scheduler_choice(str(first["sampler"]), str(first["schedule"])),
                                   scheduler_config(parts.scheduler_config, str(first["prediction"])))
        latents, finish = self._latents(batch, parts, scheduler, cond, uncond, text, (width, height))
        denoise_time = clock.lap()

        metadata = {"model_path": self._load_key[0], "vae": self._load_key[1], "options": self.speed_options(),
                    "scheduler": type(scheduler).__name__, "device": str(parts.device),
                    "dtype": str(parts.dtype).removeprefix("torch."), "width": width, "height": height}
        if self.networks is not None and self.networks.active:
            metadata["loras"] = [list(pair) for pair in self.networks.active]
        share = 1 / len(batch)
        timings = [{"text": text_time * share, "denoise": denoise_time * share} for _ in batch]
        decoded = self.decoder.submit(parts.vae, latents, finish, timings)
        return [(image, {**metadata, **ella_setup.metadata(p, self._resolve),
                         **instruct_pix2pix.metadata(p, parts.unet.config.in_channels)}, cell_timings)
                for p, image, cell_timings in zip(batch, decoded, timings, strict=True)]

    def _conditioning(self, batch: list[dict[str, Any]], parts: Components, width: int, height: int
                      ) -> tuple[sampling.Context, sampling.Context, dict[str, Any]]:
        """The batch's text conditioning (CLIP, ELLA or both) after its LoRAs and embeddings are in place:
        (cond, uncond, the rest of what `sampling.guided_denoiser` takes about the text)."""
        first = batch[0]
        if self.networks is not None:
            self.networks.use_loras(self._lora_set(first))
            spec_dir, models_dir = Path(self.context.spec_dir), self._models_dir()
            self.networks.use_embeddings({name: path for p in batch
                                          for name, path in networks.embedding_files(p, spec_dir, models_dir).items()})
        skips = [int(p["clip_skip"]) for p in batch]
        prompts = [(str(p["prompt"]), s) for p, s in zip(batch, skips, strict=True)]
        negatives = [(str(p["negative_prompt"]), s) for p, s in zip(batch, skips, strict=True)]
        clip = None
        if not ella_setup.enabled(first) or str(first["ella_mode"]) == "ella+clip":
            clip = self.prompts.conditioning(prompts, negatives)
        if ella_setup.enabled(first):
            cond, uncond, masks = self.ella.conditioning(batch, self._resolve, parts.device, parts.dtype, clip)
        else:
            cond, uncond, masks = clip.cond, clip.uncond, (clip.cond_mask, clip.uncond_mask)
        added = (None, None)
        if isinstance(self.prompts, SdxlPromptEncoder):
            added = (added_conditioning(self.prompts.pooled(prompts), width, height),
                     added_conditioning(self.prompts.negative_pooled(negatives), width, height))
        return cond, uncond, {"masks": masks, "added_cond": added[0], "added_uncond": added[1]}

    def _latents(self, batch: list[dict[str, Any]], parts: Components, scheduler, cond, uncond,
                 text: dict[str, Any], size: tuple[int, int]) -> tuple[torch.Tensor, list[Finish]]:
        """The batch's denoised latents in the mode its model and params call for, and for each cell how its
        decoded image becomes its output (pasted back into the init image, resized to it)."""
        first = batch[0]
        width, height = size
        factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        steps = int(first["steps"])
        seeds, scales = [int(p["seed"]) for p in batch], [float(p["cfg_scale"]) for p in batch]
        channels = parts.unet.config.in_channels
        unchanged = [_unchanged] * len(batch)
        if self._is_unclip(first):
            return self.variations.denoise(parts, self._model_path(first), batch, self.inputs, scheduler, cond,
                                           uncond, scales, seeds, size, **text), unchanged
        if x4_kind.is_x4(channels):
            return x4_kind.denoise(parts, self._info(first).config, batch, self.inputs, scheduler, cond, uncond,
                                   scales, seeds, size, **text), unchanged
        from_image = depth2img.is_depth2img(channels) or channels == instruct_pix2pix.CHANNELS
        if not from_image and edit.mode_of(first) not in ("img2img", "inpaint"):
            scheduler.set_timesteps(steps, device=parts.device)
            noise, generators = sampling.initial_noise(seeds, (channels, height // factor, width // factor),
                                                       parts.device)
            denoise = sampling.guided_denoiser(parts.unet, cond, uncond, scales, **text)
            return sampling.sample(denoise, scheduler, noise * scheduler.init_noise_sigma,
                                   sampling.step_noise_kwargs(scheduler, seeds, generators)), unchanged
        prepared = edit.prepare_cells(batch, self.inputs, size, parts.device)
        if depth2img.is_depth2img(channels):
            depth = self.depths.for_batch(batch, self._model_path(first), (height // factor, width // factor),
                                          parts.device)
            latents = depth2img.denoise(parts, prepared.pixels, depth, scheduler, cond, uncond, scales, steps,
                                        float(first["denoise"]), seeds, **text)
        elif channels == instruct_pix2pix.CHANNELS:
            latents = instruct_pix2pix.denoise(parts, prepared.pixels, scheduler, cond, uncond, scales,
                                               [instruct_pix2pix.image_cfg_scale(p) for p in batch], steps, seeds,
                                               **text)
        else:
            latents = edit.denoise(parts, prepared, scheduler, cond, uncond, scales, steps, float(first["denoise"]),
                                   seeds, **text)
        return latents, prepared.finish

    @torch.inference_mode()
    def fit_batch(self, params: dict[str, Any], wanted: int) -> int:
        """The largest batch up to `wanted` whose denoising fits the device's free memory.

        Measured, not guessed: one UNet pass at one and at two guided cells gives the memory a cell
        adds; CPU memory is not probed (the executor's batch size stands there).
        """
        if pick_device(self.context.device).type != "cuda" or wanted <= 1 or edit.mode_of(params) == "input":
            return wanted  # (a SAM edit of a given image has no base denoising to fit)
        params = {**_DEFAULTS, **params}
        parts = self._ensure_loaded(params)
        self.decoder.drain()  # its memory would count against the batch being measured
        if ella_setup.enabled(params):
            self.ella.load(params, self._resolve, parts.device, parts.dtype)  # its memory is taken before measuring
        width, height = self._size(params)
        factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        shape = (parts.unet.config.in_channels, height // factor, width // factor)
        empty = [("", int(params["clip_skip"]))]
        context = self.prompts.encode(empty)[0].unsqueeze(0)
        pooled = self.prompts.pooled(empty) if isinstance(self.prompts, SdxlPromptEncoder) else None

        def peak(cells: int) -> int:
            torch.cuda.synchronize(parts.device)
            torch.cuda.reset_peak_memory_stats(parts.device)
            rows = 2 * cells  # conditional and unconditional halves
            if shape[0] == instruct_pix2pix.CHANNELS:
                rows += cells  # and instruct-pix2pix's image-only third
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

    def _apply_speed_options(self, parts: Components) -> None:
        if self.context.channels_last:
            parts.unet.to(memory_format=torch.channels_last)
            parts.vae.to(memory_format=torch.channels_last)
        if self.context.compile:
            # Static shapes: each batch key (size, batch length) compiles once and is reused for its cells.
            parts.unet.forward = torch.compile(parts.unet.forward, dynamic=False)
            parts.vae.decode = torch.compile(parts.vae.decode, dynamic=False)
        workers = self.context.cpu_shards or default_workers()
        if parts.device.type == "cpu" and workers > 1:
            self.shards = self.shards or BatchShards(workers)
            parts.unet.forward = self.shards.wrap(parts.unet.forward)

    def speed_options(self) -> dict[str, Any]:
        """What the journal records about how a cell was computed, beyond device and dtype."""
        attention = "unknown"
        if self._components is not None:
            processors = {type(p).__name__ for p in self._components.unet.attn_processors.values()}
            attention = ",".join(sorted(processors))
        return {"compile": self.context.compile, "channels_last": self.context.channels_last,
                "attention": attention, "cpu_shards": self.shards.workers if self.shards else 1}

    def _free_device_memory(self) -> None:
        # Only the CUDA allocator holds freed blocks back for reuse; a full collection takes a fifth of a
        # second, which is no cost worth paying for the CPU, where reference counting already freed the rest.
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            gc.collect()
            torch.cuda.empty_cache()

    def stats(self) -> list[str]:
        """Lines for the run summary."""
        lines = [self.cache.stats.line(), f"models: {self.models.loads} loaded, {self.models.hits} reused from memory"]
        if self.prompts is not None:
            lines.append(f"text embeddings: {self.prompts.cache.hits} cached, {self.prompts.cache.misses} encoded")
        return lines + self.ella.stats() + self.depths.stats() + self.variations.stats()

    def close(self) -> None:
        self.decoder.close()
        self.decoder = Decoder()  # a closed backend may render again
        self.upscaling.close()
        self.models.clear()
        self.segmenting.close()
        if self.shards is not None:
            self.shards.close()
            self.shards = None
        self.depths.close()
        self._components = None
        self.prompts = None
        self.ella.close()
        self.variations.close()
        self.networks = None
        self._load_key = self._loaded = None
        self.cache.clear()
        self._free_device_memory()


def _unchanged(image: Image.Image) -> Image.Image:
    return image


class _Clock:
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
