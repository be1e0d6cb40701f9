"""CLIP's BPE vocabulary for single-file checkpoints, taken from an installed package that ships it.

A1111-style checkpoints carry no tokenizer, and gridgen must not download one, so the files a
`CLIPTokenizer` reads (`vocab.json`, `merges.txt`) are written once from the
`bpe_simple_vocab_16e6.txt.gz` that OpenCLIP (`open-clip-torch`) and OpenAI's CLIP (`clip-anytorch`)
ship. Only the data file is read; neither package is imported, so it can be installed `--no-deps`.
SD 1.x, SD 2.x and both SDXL tokenizers use this one vocabulary (they differ in the pad token only).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

from gridgen.errors import ModelError
from gridgen.fsutil import replace_dir

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
# Packages known to ship the file, in order of preference.
VOCAB_PACKAGES = ("open_clip", "clip")
# CLIP keeps 48894 merges of the file (49408 tokens = 2 * 256 byte tokens + merges + 2 specials).
_MERGES = 49152 - 256 - 2
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
INSTALL_HINT = "pip install --no-deps open-clip-torch (gridgen reads only its CLIP vocabulary file)"


def find_vocab_file() -> Path | None:
    """The BPE file of the first installed package that has one, found without importing the package."""
    for package in VOCAB_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(folder) / VOCAB_FILE
            if candidate.is_file():
                return candidate
    return None


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gridgen"


def tokenizer_files() -> Path:
    """A folder with CLIP's `vocab.json` and `merges.txt`, written on first use; raises ModelError."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    source = find_vocab_file()
    if source is None:
        raise ModelError(f"single-file checkpoints need CLIP's tokenizer vocabulary, which no installed package "
                         f"provides; {INSTALL_HINT}, or use a diffusers folder (it has its own tokenizer)")
    folder = _cache_root() / "clip-vocab"
    if _complete(folder):
        return folder
    lines = gzip.open(source, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:1 + _MERGES]]
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [token + "</w>" for token in byte_tokens] + ["".join(m) for m in merges] + list(_SPECIALS)

    try:
        with replace_dir(folder) as staging:
            (staging / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
            (staging / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                                encoding="utf-8")
    except OSError:
        if not _complete(folder):  # another process (a Ray worker) may have just written the same files
            raise
    return folder


def _complete(folder: Path) -> bool:
    return (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
