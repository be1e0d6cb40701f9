"""The built-in `diffusers` backend: Stable Diffusion txt2img, img2img and inpaint on diffusers' models and schedulers.

It validates a cell's params from config files alone, keeps the last model loaded, and renders a
batch of cells that share a sampler, step count and size while each keeps its own prompt,
negative prompt, seed, CFG scale and CLIP skip. The pieces live in `gridgen.backends.sd`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from gridgen.backends.base import BackendContext, BatchOutOfMemory, ParamProblem, Result
from gridgen.backends.sd import edit, ella_setup, images, sampling
from gridgen.backends.sd.inputs import ImageInputs
from gridgen.backends.sd.load import Components, load_components, pick_device, pick_dtype
from gridgen.backends.sd.locate import read_model_info, resolve_model, resolve_vae, vae_factor
from gridgen.backends.sd.segment_stage import SamStage
from gridgen.backends.sd.text import PromptEncoder
from gridgen.backends.sd.upscale_stage import UpscaleStage
from gridgen.cache import StageCache, stage_key
from gridgen.errors import ModelError
from gridgen.params import Registry
from gridgen.samplers import make_scheduler, scheduler_choice, unsupported_schedule

if TYPE_CHECKING:
    from gridgen.params import Param
    from gridgen.plan import Cell

SUPPORTED_PARAMS = frozenset({
    "prompt", "negative_prompt", "prompt_replace", "seed", "steps", "cfg_scale", "sampler", "schedule",
    "width", "height", "out_width", "out_height", "model", "vae", "clip_skip", "format", "upscaler", "upscale_by",
    "ella", "ella_text_encoder", "token_length", "ella_mode",
})
UPSCALE_PARAMS = frozenset({"upscale_width", "upscale_height", "tile_size", "tile_overlap", "noise_level",
                            "upscale_prompt", "upscale_steps", "upscale_cfg_scale", "hires_steps", "hires_denoise"})
SUPPORTED_PARAMS |= UPSCALE_PARAMS
EDIT_PARAMS = frozenset({"init_image", "denoise", "mask", "mask_blur", "inpaint_full_res", "padding_mask_crop",
                         "inpainting_fill"})
SAM_PARAMS = frozenset({"sam_prompt", "sam_model", "sam_mask", "dilate", "inpaint_mode", "inpainter"})
SUPPORTED_PARAMS |= EDIT_PARAMS | SAM_PARAMS
# Params only the stages after base generation read: cells differing only in these share a base image.
POST_PARAMS = frozenset({"upscaler", "upscale_by", "out_width", "out_height", "format", "prompt_replace"})
POST_PARAMS |= UPSCALE_PARAMS | SAM_PARAMS
_DEFAULTS = Registry().defaults()


def base_params(params: dict[str, Any]) -> dict[str, Any]:
    # In a SAM edit the inpainting params belong to the edit, not to the base image it starts from.
    later = POST_PARAMS | (EDIT_PARAMS - {"init_image"} if params.get("sam_prompt") else frozenset())
    return ella_setup.stage_params({name: value for name, value in params.items() if name not in later})


class DiffusersBackend:
    name = "diffusers"

    def __init__(self, context: BackendContext):
        self.context = context
        self._load_key: Hashable | None = None
        self._components: Components | None = None
        self.prompts: PromptEncoder | None = None  # the loaded model's text-embedding cache
        self.ella = ella_setup.EllaRuntime()
        self._resolved: dict[tuple, Path | None | ModelError] = {}
        spill = Path(context.out_dir) / ".cache" if context.out_dir else None
        self.cache = StageCache(context.cache_bytes, spill)
        self.inputs = ImageInputs(Path(context.spec_dir))
        self.upscaling = UpscaleStage(context, self.cache, self._loaded_model)
        self.segmenting = SamStage(context, self.cache)

    def supported_params(self) -> set[str]:
        return set(SUPPORTED_PARAMS)

    def extra_params(self) -> list[Param]:
        return []

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

    def _size(self, params: dict[str, Any]) -> tuple[int, int]:
        if params.get("width") and params.get("height"):
            return int(params["width"]), int(params["height"])
        try:
            info = read_model_info(self._model_path(params))
        except ModelError:
            info = None  # validate() reports the missing model; planning goes on
        found = edit.init_size(params, self.inputs, info.vae_factor if info else 8)
        if found:
            return found
        native = info.native_size if info else 0
        return int(params.get("width") or native), int(params.get("height") or native)

    def validate(self, params: dict[str, Any]) -> list[ParamProblem]:
        params = {**_DEFAULTS, **params}
        problems: list[ParamProblem] = []
        info = None
        try:
            info = read_model_info(self._model_path(params))
        except ModelError as exc:
            problems.append(ParamProblem("model", str(exc)))
        factor = info.vae_factor if info else None
        try:
            vae = self._vae_path(params)
            factor = vae_factor(vae) if vae else factor
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
        clip_skip = int(params["clip_skip"])
        if info and clip_skip > info.text_layers:
            problems.append(ParamProblem("clip_skip", f"clip_skip {clip_skip} is more than the {info.text_layers} "
                                                      f"layers of this model's text encoder"))
        problems += ella_setup.check_cell(params, info.path if info else None, self._resolve)
        problems += self.inputs.check(params)
        channels = edit.unet_in_channels(info.path) if info else None
        problems += [ParamProblem(name, message) for name, message in edit.problems(params, channels)]
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
        return model, vae_key

    def describe_load(self, params: dict[str, Any]) -> str:
        model, vae = self.load_key(params)
        return f"model {model} (vae {vae})"

    def batch_key(self, params: dict[str, Any]) -> Hashable:
        params = {**_DEFAULTS, **params}
        # The scheduler choice, not the sampler's name: names that build the same scheduler can share a batch.
        choice = scheduler_choice(str(params["sampler"]), str(params["schedule"]))
        return (self.load_key(params), choice, int(params["steps"]), *self._size(params),
                ella_setup.batch_part(params, self._resolve), edit.batch_part(params))

    def render(self, cells: list[Cell]) -> Iterator[Result]:
        size = max(1, int(self.context.max_batch))
        for start in range(0, len(cells), size):
            # The batch is finished before anything is yielded, so no torch mode leaks into the caller.
            yield from self._render_batch(cells[start:start + size])

    def _ensure_loaded(self, params: dict[str, Any]) -> Components:
        key = self.load_key(params)
        if self._components is None or key != self._load_key:
            self.close()
            device = pick_device(self.context.device)
            self._components = load_components(self._model_path(params), self._vae_path(params), device,
                                               pick_dtype(self.context.dtype, device))
            self._apply_speed_options(self._components)
            self.prompts = PromptEncoder(self._components.tokenizer, self._components.text_encoder)
            self._load_key = key
        return self._components

    def _loaded_model(self, params: dict[str, Any]) -> tuple[Components, PromptEncoder]:
        """The cell's model and its prompt cache, for stages that run it again (hires fix, SD upscale)."""
        return self._ensure_loaded(params), self.prompts

    def _base_key(self, params: dict[str, Any]) -> str:
        if edit.mode_of(params) == "input":  # the file as it is: only its bytes matter
            return stage_key("input", {}, self.inputs.fingerprint(params))
        return stage_key("txt2img", base_params(params), f"{self.load_key(params)}{self.inputs.fingerprint(params)}")

    def _render_batch(self, cells: list[Cell]) -> list[Result]:
        """Base images from the stage cache or one denoising batch, then each cell's post stages."""
        batch = [{**_DEFAULTS, **cell.params} for cell in cells]
        keys = [self._base_key(p) for p in batch]
        bases: dict[str, tuple[Image.Image, dict[str, Any], dict[str, float]]] = {}
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
                self.cache.put(key, (image, metadata))
                bases[key] = (image, metadata, timings)
        results = []
        for cell, params, key in zip(cells, batch, keys, strict=True):
            base, base_metadata, timings = bases[key]
            started = time.perf_counter()
            edited = self.segmenting.apply(base, key, params)
            image = self.upscaling.apply(edited.image, edited.key, params)
            image = images.resize(image, params.get("out_width"), params.get("out_height"))
            metadata = {**base_metadata, **edited.metadata, "model": str(params["model"]),
                        "sampler": str(params["sampler"])}
            results.append(Result(cell, image, metadata=metadata,
                                  timings={**timings, "post": time.perf_counter() - started}, files=edited.files))
        return results

    @torch.inference_mode()
    def _denoise(self, batch: list[dict[str, Any]]) -> list[tuple[Image.Image, dict[str, Any], dict[str, float]]]:
        """One batched txt2img pass: cells share sampler, steps and size, each keeps its own conditioning."""
        first = batch[0]
        parts = self._ensure_loaded(first)
        width, height = self._size(first)
        factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        clock = _Clock(parts.device)

        if ella_setup.enabled(first):
            cond, uncond = self.ella.conditioning(batch, self._resolve, parts.device, parts.dtype, self.prompts)
        else:
            skips = [int(p["clip_skip"]) for p in batch]
            cond = self.prompts([(str(p["prompt"]), s) for p, s in zip(batch, skips, strict=True)])
            uncond = self.prompts([(str(p["negative_prompt"]), s) for p, s in zip(batch, skips, strict=True)])
        text_time = clock.lap()

        scheduler = make_scheduler(scheduler_choice(str(first["sampler"]), str(first["schedule"])),
                                   parts.scheduler_config)
        seeds = [int(p["seed"]) for p in batch]
        scales = [float(p["cfg_scale"]) for p in batch]
        finish = [lambda image: image] * len(batch)
        if edit.mode_of(first) in ("img2img", "inpaint"):
            prepared = edit.prepare_cells(batch, self.inputs, (width, height), parts.device)
            finish = prepared.finish
            latents = edit.denoise(parts, prepared, scheduler, cond, uncond, scales, int(first["steps"]),
                                   float(first["denoise"]), seeds)
        else:
            scheduler.set_timesteps(int(first["steps"]), device=parts.device)
            noise, generators = sampling.initial_noise(
                seeds, (parts.unet.config.in_channels, height // factor, width // factor), parts.device)
            denoise = sampling.guided_denoiser(parts.unet, cond, uncond, scales)
            latents = sampling.sample(denoise, scheduler, noise * scheduler.init_noise_sigma,
                                      sampling.step_noise_kwargs(scheduler, seeds, generators))
        denoise_time = clock.lap()
        decoded = [done(image) for done, image in zip(finish, images.decode(parts.vae, latents), strict=True)]
        decode_time = clock.lap()

        metadata = {"model_path": self._load_key[0], "vae": self._load_key[1], "options": self.speed_options(),
                    "scheduler": type(scheduler).__name__, "device": str(parts.device),
                    "dtype": str(parts.dtype).removeprefix("torch."), "width": width, "height": height}
        share = 1 / len(batch)
        timings = {"text": text_time * share, "denoise": denoise_time * share, "decode": decode_time * share}
        return [(image, {**metadata, **ella_setup.metadata(p, self._resolve)}, dict(timings))
                for p, image in zip(batch, decoded, strict=True)]

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
        if ella_setup.enabled(params):
            self.ella.load(params, self._resolve, parts.device, parts.dtype)  # its memory is taken before measuring
        width, height = self._size(params)
        factor = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        shape = (parts.unet.config.in_channels, height // factor, width // factor)
        context = self.prompts([("", int(params["clip_skip"]))])

        def peak(cells: int) -> int:
            torch.cuda.synchronize(parts.device)
            torch.cuda.reset_peak_memory_stats(parts.device)
            rows = 2 * cells  # conditional and unconditional halves
            x = torch.zeros((rows, *shape), device=parts.device, dtype=parts.unet.dtype)
            parts.unet(x, torch.tensor(999, device=parts.device), encoder_hidden_states=context.expand(rows, -1, -1))
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

    def speed_options(self) -> dict[str, Any]:
        """What the journal records about how a cell was computed, beyond device and dtype."""
        attention = "unknown"
        if self._components is not None:
            processors = {type(p).__name__ for p in self._components.unet.attn_processors.values()}
            attention = ",".join(sorted(processors))
        return {"compile": self.context.compile, "channels_last": self.context.channels_last,
                "attention": attention}

    def _free_device_memory(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def stats(self) -> list[str]:
        """Lines for the run summary."""
        lines = [self.cache.stats.line()]
        if self.prompts is not None:
            lines.append(f"text embeddings: {self.prompts.hits} cached, {self.prompts.misses} encoded")
        return lines + self.ella.stats()

    def close(self) -> None:
        self.upscaling.close()
        self.segmenting.close()
        self._components = None
        self.prompts = None
        self.ella.close()
        self._load_key = None
        self.cache.clear()
        self._free_device_memory()


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
