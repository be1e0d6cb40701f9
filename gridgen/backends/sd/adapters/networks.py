"""Applies textual-inversion embeddings and LoRAs to the loaded model, through diffusers' own loaders,
and resolves and checks the ones a cell's params ask for.

A diffusers `StableDiffusionPipeline` (`StableDiffusionXLPipeline` for SDXL) is built around the
components already loaded (sharing them, copying nothing) only for its loader mixins:
`load_textual_inversion`, `load_lora_weights` (which converts A1111/kohya files) and `set_adapters`.
An embedding is added the first time a batch's prompts use it and stays; each LoRA file becomes one
PEFT adapter on the UNet and on each text encoder it has weights for, the first time a batch uses
it, and stays loaded, so moving between LoRA sets and weights is a `set_adapters` call, never a
reload of the base model from disk.

Text-encoder adapters need no newer peft than the installed one: transformers' `load_adapter`,
which diffusers calls, injects them with peft itself, and diffusers weights and switches them on
peft's layers directly; only transformers' own adapter methods ask for a newer peft, and none is used.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from gridgen.backends.sd.adapters import embeddings, lora
from gridgen.backends.sd.text.prompt_syntax import plain_text
from gridgen.errors import ModelError

if TYPE_CHECKING:
    from gridgen.backends.sd.models.load import Components
    from gridgen.backends.sd.text.clip import PromptEncoder
    from gridgen.backends.sd.text.clip_xl import SdxlPromptEncoder

LoraSet = tuple[tuple[str, float], ...]  # (resolved file, weight) pairs, sorted by file


@lru_cache(maxsize=64)
def text_limits(model: Path) -> tuple[tuple[int, ...] | None, int | None]:
    """(token vector width of each text encoder, tokens per prompt chunk) of a model folder, from its configs."""
    try:
        encoders = [folder for folder in (model / "text_encoder", model / "text_encoder_2") if folder.is_dir()]
        widths = tuple(int(json.loads((encoder / "config.json").read_text(encoding="utf-8"))["hidden_size"])
                       for encoder in encoders) or None
        window = json.loads((model / "tokenizer" / "tokenizer_config.json").read_text(encoding="utf-8"))
        return widths, int(window["model_max_length"]) - 2
    except (OSError, ValueError, KeyError, TypeError):
        return None, None  # the model's own validation reports unreadable configs


class Networks:
    """The embeddings and LoRA adapters one loaded model carries, and which LoRAs are active."""

    def __init__(self, parts: Components, prompts: PromptEncoder | SdxlPromptEncoder):
        from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

        scheduler = DDIMScheduler.from_config(parts.scheduler_config)
        if parts.text_encoder_2 is None:
            self.pipeline = StableDiffusionPipeline(
                vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
                scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        else:
            self.pipeline = StableDiffusionXLPipeline(
                vae=parts.vae, text_encoder=parts.text_encoder, text_encoder_2=parts.text_encoder_2,
                tokenizer=parts.tokenizer, tokenizer_2=parts.tokenizer_2, unet=parts.unet, scheduler=scheduler)
        self.pipeline.set_progress_bar_config(disable=True)
        self.text_encoders = [encoder for encoder in (parts.text_encoder, parts.text_encoder_2) if encoder is not None]
        self.prompts = prompts
        self.embeddings: set[str] = set()  # names of the embeddings loaded
        self.adapters: dict[str, str] = {}  # LoRA file -> adapter name
        self.text_adapters: set[str] = set()  # the adapters with text-encoder weights
        self.active: LoraSet | None = ()  # None: unknown after a failed load

    def use_embeddings(self, files: dict[str, Path]) -> None:
        from gridgen.backends.sd.text.clip import PromptEncoder

        load = embeddings.load if isinstance(self.prompts, PromptEncoder) else embeddings.load_sdxl
        for name, path in files.items():
            if name not in self.embeddings:
                try:
                    with _quiet_loaders():
                        load(self.pipeline, self.prompts, name, path)
                except (ValueError, RuntimeError, embeddings.EmbeddingError) as exc:
                    raise ModelError(f"cannot load embedding {path} into this model: {exc}") from exc
                self.embeddings.add(name)

    def use_loras(self, loras: LoraSet) -> None:
        if loras == self.active:
            return
        for file, _ in loras:
            if file not in self.adapters:
                self._load(file, f"lora{len(self.adapters)}")
        if loras:
            self.pipeline.enable_lora()
            self.pipeline.set_adapters([self.adapters[file] for file, _ in loras],
                                       adapter_weights=[weight for _, weight in loras])
        else:
            self.pipeline.disable_lora()
        self.active = loras
        # A prompt's encoding depends on the text-encoder LoRAs and their weights: they key its cache entry.
        self.prompts.state = tuple((file, weight) for file, weight in loras
                                   if self.adapters[file] in self.text_adapters)

    def _load(self, file: str, adapter: str) -> None:
        path = Path(file)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Already found a `peft_config`")  # one adapter per LoRA file
                with _quiet_loaders():
                    self.pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter,
                                                    local_files_only=True)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            self.active = None  # a failed load may leave peft with other adapters active
            family = "SDXL" if len(self.text_encoders) == 2 else "SD 1.x or 2.x"
            raise ModelError(f"cannot apply LoRA {path} to this model: {exc}; check that it was trained for "
                             f"this model family ({family})") from exc
        self.adapters[file] = adapter
        if any(adapter in (getattr(encoder, "peft_config", None) or {}) for encoder in self.text_encoders):
            self.text_adapters.add(adapter)


@contextmanager
def _quiet_loaders():
    """transformers reports every base weight as missing when it loads an adapter's weights alone, and how it
    initialises new token rows that an embedding's vectors then overwrite; diffusers warns about a LoRA that
    has no UNet weights. A grid run would print these per file."""
    from transformers.utils import logging

    from gridgen.backends.sd.models.single_file import quiet_diffusers

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with quiet_diffusers():
            yield
    finally:
        logging.set_verbosity(level)


# What a cell's params ask for, resolved against the spec and models folders (no model needed).


def lora_set(values: list[str] | None, spec_dir: Path, models_dir: Path | None) -> LoraSet:
    """The cell's LoRAs as (file, weight), the last weight given for a file winning; raises LoraError."""
    chosen: dict[str, float] = {}
    for value in values or []:
        parsed = lora.parse(value)
        chosen[str(lora.resolve(parsed.name, spec_dir, models_dir))] = parsed.weight
    return tuple(sorted(chosen.items()))


def lora_problems(values: list[str] | None, spec_dir: Path, models_dir: Path | None) -> list[tuple[str, str]]:
    """(severity, message) for each LoRA value that cannot be found, read, or fully applied."""
    found = []
    for value in values or []:
        try:
            path = lora.resolve(lora.parse(value).name, spec_dir, models_dir)
        except lora.LoraError as exc:
            found.append(("error", str(exc)))
            continue
        if problem := lora.problem(path):
            found.append(("error", problem))
    return found


def embedding_files(params: dict, spec_dir: Path, models_dir: Path | None,
                    fields: tuple[str, ...] = ("prompt", "negative_prompt")) -> dict[str, Path]:
    """The embeddings the cell's `fields` use, by name; raises EmbeddingError."""
    where = embeddings.folders(spec_dir, models_dir)
    offered = embeddings.available(where)
    for value in params.get("embedding") or []:
        path = embeddings.resolve(value, spec_dir, where)
        offered[path.stem.lower()] = path
    text = " ".join(plain_text(str(params.get(field) or "")) for field in fields)
    return {name: offered[name] for name in embeddings.referenced(text, list(offered))}


def embedding_problems(params: dict, spec_dir: Path, models_dir: Path | None, model: Path | None,
                       sdxl: bool = False) -> list[tuple[str, str]]:
    """(param, message) for missing, unreadable or unfit embedding files the params name or the prompts use;
    `model` is the folder whose configs describe the model, `sdxl` whether it has SDXL's two text encoders."""
    try:
        where = embeddings.folders(spec_dir, models_dir)
        culprits = {embeddings.resolve(value, spec_dir, where): "embedding" for value in params.get("embedding") or []}
        for field in ("negative_prompt", "prompt"):  # a file both use is blamed on the prompt
            culprits.update({path: field for path in embedding_files(params, spec_dir, models_dir, (field,)).values()})
    except embeddings.EmbeddingError as exc:
        return [("embedding", str(exc))]
    widths, window = text_limits(model) if model else (None, None)
    if sdxl:
        return [(field, problem) for path, field in culprits.items()
                for problem in embeddings.sdxl_problems(path, widths if widths and len(widths) == 2 else None, window)]
    return [(field, problem) for path, field in culprits.items()
            for problem in embeddings.problems(path, widths[0] if widths else None, window)]
