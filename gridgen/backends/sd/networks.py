"""Applies textual-inversion embeddings and LoRAs to the loaded model, through diffusers' own loaders,
and resolves and checks the ones a cell's params ask for.

A diffusers `StableDiffusionPipeline` is built around the components already loaded (sharing them,
copying nothing) only for its loader mixins: `load_textual_inversion`, `load_lora_weights` (which
converts A1111/kohya files) and `set_adapters`. An embedding is added the first time a batch's
prompts use it and stays; each LoRA file becomes one PEFT adapter the first time a batch uses it
and stays loaded, so moving between LoRA sets and weights is a `set_adapters` call, never a reload
of the base model from disk.
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from pathlib import Path

from gridgen.backends.sd import embeddings, lora
from gridgen.backends.sd.load import Components
from gridgen.backends.sd.prompt_syntax import plain_text
from gridgen.backends.sd.text import PromptEncoder
from gridgen.errors import ModelError

LoraSet = tuple[tuple[str, float], ...]  # (resolved file, weight) pairs, sorted by file


@lru_cache(maxsize=64)
def text_limits(model: Path) -> tuple[int | None, int | None]:
    """(token vector width, tokens per prompt chunk) of a model folder's text encoder, from its configs."""
    try:
        width = json.loads((model / "text_encoder" / "config.json").read_text(encoding="utf-8"))["hidden_size"]
        window = json.loads((model / "tokenizer" / "tokenizer_config.json").read_text(encoding="utf-8"))
        return int(width), int(window["model_max_length"]) - 2
    except (OSError, ValueError, KeyError, TypeError):
        return None, None  # the model's own validation reports unreadable configs


class Networks:
    """The embeddings and LoRA adapters one loaded model carries, and which LoRAs are active."""

    def __init__(self, parts: Components, prompts: PromptEncoder):
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        self.pipeline = StableDiffusionPipeline(
            vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
            scheduler=DDIMScheduler.from_config(parts.scheduler_config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        self.pipeline.set_progress_bar_config(disable=True)
        self.prompts = prompts
        self.adapters: dict[str, str] = {}  # LoRA file -> adapter name
        self.active: LoraSet | None = ()  # None: unknown after a failed load

    def use_embeddings(self, files: dict[str, Path]) -> None:
        for name, path in files.items():
            if name not in self.prompts.embedding_names:
                try:
                    embeddings.load(self.pipeline, self.prompts, name, path)
                except (ValueError, RuntimeError) as exc:
                    raise ModelError(f"cannot load embedding {path} into this model: {exc}") from exc

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
        # With adapters on the text encoder every prompt's encoding depends on the LoRA set and weights.
        self.prompts.state = loras if hasattr(self.pipeline.text_encoder, "peft_config") else ()

    def _load(self, file: str, adapter: str) -> None:
        path = Path(file)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Already found a `peft_config`")  # one adapter per LoRA file
                if text_encoder_adapters_supported():
                    self.pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter,
                                                    local_files_only=True)
                else:
                    # diffusers' load_lora_weights without its text-encoder half (validate() warned about it).
                    state_dict, alphas = self.pipeline.lora_state_dict(str(path.parent), weight_name=path.name,
                                                                       local_files_only=True)
                    self.pipeline.load_lora_into_unet(state_dict, network_alphas=alphas, unet=self.pipeline.unet,
                                                      adapter_name=adapter, _pipeline=self.pipeline)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            self.active = None  # a failed load may leave peft with other adapters active
            raise ModelError(f"cannot apply LoRA {path} to this model: {exc}; check that it was trained for "
                             f"this model family (SD 1.x or 2.x)") from exc
        self.adapters[file] = adapter


@lru_cache(maxsize=1)
def text_encoder_adapters_supported() -> bool:
    """Whether transformers accepts the installed peft for text-encoder adapters (transformers 5 wants a newer
    peft than diffusers does; where it is missing, only a LoRA's UNet weights can be applied)."""
    from transformers.utils.peft_utils import check_peft_version

    try:
        from transformers.integrations.peft import MIN_PEFT_VERSION
    except ImportError:
        return True  # transformers 4.x checks nothing beyond what diffusers checks
    try:
        check_peft_version(min_version=MIN_PEFT_VERSION)
    except ValueError:
        return False
    return True


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
        elif lora.has_text_encoder_weights(path) and not text_encoder_adapters_supported():
            found.append(("warning", f"LoRA {path} also has text-encoder weights, which are not applied: the "
                                     f"installed transformers needs a newer peft for text-encoder adapters; only "
                                     f"its UNet weights are used"))
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


def embedding_problems(params: dict, spec_dir: Path, models_dir: Path | None,
                       model: Path | None) -> list[tuple[str, str]]:
    """(param, message) for missing, unreadable or unfit embedding files the params name or the prompts use."""
    try:
        where = embeddings.folders(spec_dir, models_dir)
        culprits = {embeddings.resolve(value, spec_dir, where): "embedding" for value in params.get("embedding") or []}
        for field in ("negative_prompt", "prompt"):  # a file both use is blamed on the prompt
            culprits.update({path: field for path in embedding_files(params, spec_dir, models_dir, (field,)).values()})
    except embeddings.EmbeddingError as exc:
        return [("embedding", str(exc))]
    width, window = text_limits(model) if model else (None, None)
    return [(field, problem) for path, field in culprits.items()
            for problem in embeddings.problems(path, width, window)]
