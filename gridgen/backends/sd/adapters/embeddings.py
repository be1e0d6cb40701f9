"""Textual-inversion embeddings: finding them by name, checking their files, loading them into a model.

An embedding is used by writing its name (the file name without suffix, any case) as a word of a
prompt or negative prompt, A1111 style: `negative_prompt: easynegative`. Names resolve to files in
an `embeddings/` folder next to the spec, then in the models folder's `embeddings/`, plus any file
the `embedding` param names. Files may be A1111's (`string_to_param`, `emb_params`) or diffusers'
(one tensor), as .pt, .bin or .safetensors; SDXL embeddings hold two tensors, `clip_l` and `clip_g`,
one for each of its text encoders. Files are read and checked at validation, before any model
loads; diffusers' `load_textual_inversion` adds the vectors to the loaded text encoder(s) under a
bracketed token no ordinary prompt text can spell, so a name never matches inside another word.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridgen.errors import GridError

if TYPE_CHECKING:
    import torch

SUFFIXES = (".safetensors", ".pt", ".bin")
SDXL_PARTS = ("clip_l", "clip_g")  # an SDXL file's vectors for its first and its second text encoder


class EmbeddingError(GridError):
    pass


def folders(spec_dir: Path, models_dir: Path | None) -> list[Path]:
    return [spec_dir / "embeddings", *([models_dir / "embeddings"] if models_dir else [])]


@lru_cache(maxsize=64)
def _files_in(folder: Path, modified: float) -> dict[str, Path]:
    return {path.stem.lower(): path for path in sorted(folder.iterdir())
            if path.suffix.lower() in SUFFIXES and path.is_file()}


def available(where: list[Path]) -> dict[str, Path]:
    """Every embedding the folders offer, by lower-case name; an earlier folder wins a name."""
    found: dict[str, Path] = {}
    for folder in reversed(where):
        if folder.is_dir():  # listed again only when the folder changes: validation asks for every cell
            found.update(_files_in(folder, folder.stat().st_mtime))
    return found


def resolve(value: str, spec_dir: Path, where: list[Path]) -> Path:
    """The file an `embedding` param value names: a path (relative to the spec) or a name in the folders."""
    raw = Path(value).expanduser()
    candidates = [raw if raw.is_absolute() else spec_dir / raw]
    candidates += [folder / f"{value}{suffix}" for folder in where for suffix in SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise EmbeddingError(f"embedding {value!r} not found: looked for {', '.join(str(c) for c in candidates)}; "
                         f"put the file in {where[0]} or give its path")


def referenced(text: str, names: list[str]) -> list[str]:
    """The names (lower case) that appear as whole words in `text`, in the order given."""
    return [name for name in names if _word(name).search(text)]


@lru_cache(maxsize=1024)
def _word(name: str) -> re.Pattern:
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])", re.IGNORECASE)


def token_for(name: str) -> str:
    return f"<{name.lower()}>"


def tokens_for(name: str, count: int) -> list[str]:
    """The tokens diffusers adds for an embedding of `count` vectors: `<name>`, `<name>_1`, ..."""
    token = token_for(name)
    return [token, *(f"{token}_{i}" for i in range(1, count))]


def spell_tokens(text: str, names: list[str]) -> str:
    """`text` with each embedding name written as the token its vectors were loaded under."""
    for name in names:
        text = _word(name).sub(token_for(name), text)
    return text


@lru_cache(maxsize=256)
def _read(path: Path, modified: float) -> Any:
    import torch

    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip errors have no common base class
        raise EmbeddingError(f"cannot read embedding file {path}: {exc}; re-download it or remove it") from exc


def vectors(path: Path) -> torch.Tensor:
    """The (count, width) vectors of an embedding file; raises EmbeddingError saying what is wrong."""
    import torch

    data = _read(path, path.stat().st_mtime)
    if _is_sdxl(data):
        raise EmbeddingError(f"{path} is an SDXL embedding (`clip_l` and `clip_g` vectors) but this model has one "
                             f"text encoder (SD 1.x/2.x); use an embedding made for this model")
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
        data = data["string_to_param"].get("*")  # A1111 .pt
    elif isinstance(data, dict) and len(data) == 1:
        data = next(iter(data.values()))  # A1111 .safetensors (`emb_params`) or diffusers
    if not isinstance(data, torch.Tensor) or data.ndim not in (1, 2) or not data.numel():
        raise EmbeddingError(f"{path} is not a textual-inversion embedding: expected A1111's `string_to_param` or "
                             f"`emb_params`, or a diffusers file holding one tensor")
    return data.detach().reshape(-1, data.shape[-1])


def problems(path: Path, width: int | None, window: int | None) -> list[str]:
    """What stops the embedding at `path` from working with a text encoder of `width`-wide tokens."""
    try:
        found = vectors(path)
    except EmbeddingError as exc:
        return [str(exc)]
    if width is not None and found.shape[1] != width:
        return [f"embedding {path} has {found.shape[1]}-wide vectors but this model's text encoder takes {width}: "
                f"it was made for another model family; use one trained for this model"]
    if window is not None and found.shape[0] > window:
        return [f"embedding {path} has {found.shape[0]} vectors, more than the {window} tokens of one prompt chunk"]
    return []


def _is_sdxl(data: Any) -> bool:
    return isinstance(data, dict) and any(part in data for part in SDXL_PARTS)


def sdxl_vectors(path: Path) -> dict[str, torch.Tensor]:
    """The `clip_l` and `clip_g` (count, width) vectors of an SDXL embedding file; raises EmbeddingError."""
    import torch

    data = _read(path, path.stat().st_mtime)
    if not _is_sdxl(data):
        found = vectors(path)  # raises for files of no known layout
        raise EmbeddingError(f"embedding {path} holds one set of {found.shape[1]}-wide vectors, made for SD 1.x/2.x, "
                             f"but SDXL models take an embedding with `clip_l` and `clip_g` vectors; use one made "
                             f"for SDXL")
    for part in SDXL_PARTS:
        if not isinstance(data.get(part), torch.Tensor) or not data[part].numel():
            raise EmbeddingError(f"SDXL embedding {path} has no `{part}` tensor: SDXL embeddings hold `clip_l` and "
                                 f"`clip_g` vectors, one set for each text encoder; re-download or re-export it")
    parts = {part: data[part].detach().reshape(-1, data[part].shape[-1]) for part in SDXL_PARTS}
    if parts["clip_l"].shape[0] != parts["clip_g"].shape[0]:
        raise EmbeddingError(f"SDXL embedding {path} has {parts['clip_l'].shape[0]} `clip_l` vectors but "
                             f"{parts['clip_g'].shape[0]} `clip_g` vectors; the counts must match")
    return parts


def sdxl_problems(path: Path, widths: tuple[int, int] | None, window: int | None) -> list[str]:
    """What stops the embedding at `path` from working with an SDXL model whose encoders take `widths`."""
    try:
        data = _read(path, path.stat().st_mtime)
        if not _is_sdxl(data) and widths:
            found = vectors(path)
            return [f"embedding {path} holds one set of {found.shape[1]}-wide vectors, made for SD 1.x/2.x, but this "
                    f"SDXL model takes `clip_l` vectors {widths[0]} wide and `clip_g` vectors {widths[1]} wide; use "
                    f"an embedding made for SDXL"]
        parts = sdxl_vectors(path)
    except EmbeddingError as exc:
        return [str(exc)]
    found = []
    for (part, got), wanted in zip(parts.items(), widths or (None, None), strict=True):
        if wanted is not None and got.shape[1] != wanted:
            found.append(f"embedding {path} has {got.shape[1]}-wide `{part}` vectors but this model's text encoder "
                         f"takes {wanted}: it was made for another model; use one trained for this model")
    count = parts["clip_l"].shape[0]
    if window is not None and count > window:
        found.append(f"embedding {path} has {count} vectors, more than the {window} tokens of one prompt window")
    return found


def load(pipeline, prompts, name: str, path: Path) -> None:
    """Add the embedding at `path` to the pipeline's text encoder and tell `prompts` its tokens."""
    token = token_for(name)
    count = vectors(path).shape[0]
    # diffusers reads the file's layout (A1111 or its own); the token given replaces any name inside.
    pipeline.load_textual_inversion(_read(path, path.stat().st_mtime), token=token,
                                    tokenizer=pipeline.tokenizer, text_encoder=pipeline.text_encoder)
    ids = pipeline.tokenizer.convert_tokens_to_ids(tokens_for(name, count))
    prompts.embedding_tokens[ids[0]] = ids
    prompts.embedding_names.append(name)
    prompts.forget()


def load_sdxl(pipeline, prompts, name: str, path: Path) -> None:
    """Add the SDXL embedding at `path` to both text encoders of the pipeline and tell `prompts` its size."""
    token = token_for(name)
    parts = sdxl_vectors(path)
    encoders = zip(SDXL_PARTS, (pipeline.tokenizer, pipeline.tokenizer_2),
                   (pipeline.text_encoder, pipeline.text_encoder_2), strict=True)
    for part, tokenizer, text_encoder in encoders:
        pipeline.load_textual_inversion({token: parts[part]}, token=token, tokenizer=tokenizer,
                                        text_encoder=text_encoder)
    prompts.embedding_vectors[name] = parts["clip_l"].shape[0]
    prompts.forget()
