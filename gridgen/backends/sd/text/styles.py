"""A1111's prompt styles: `styles.csv` (columns name, prompt, negative_prompt) next to the spec or in the models
folder, and the `styles` param that applies named styles to a cell's prompts in order.

A style's text takes the prompt where it says `{prompt}`; otherwise it is appended after ", ", as A1111 merges
them. The first file that defines a name wins, the spec's folder before the models folder.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "styles.csv"


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    negative_prompt: str


def names(value: Any) -> list[str]:
    """The style names a `styles` value lists (`a, b`), in order."""
    return [name.strip() for name in str(value or "").split(",") if name.strip()]


def canonical(value: Any) -> str:
    """A `styles` value as one text: a YAML list joins with ", "."""
    items = value if isinstance(value, list) else [value]
    return ", ".join(name for item in items for name in names(item))


def files(spec_dir: Path, models_dir: Path | None) -> list[Path]:
    """The styles files that exist, in the order they are searched."""
    folders = [spec_dir, *([models_dir] if models_dir else [])]
    return [folder / FILE_NAME for folder in folders if (folder / FILE_NAME).is_file()]


def table(paths: list[Path]) -> dict[str, Style]:
    """Every style the files define, by name."""
    found: dict[str, Style] = {}
    for path in reversed(paths):  # earlier files win
        found.update(_read(path, path.stat().st_mtime_ns))
    return found


@functools.lru_cache(maxsize=16)
def _read(path: Path, _modified: int) -> dict[str, Style]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.DictReader(handle) if (row.get("name") or "").strip()]
    return {row["name"].strip(): Style(row["name"].strip(), row.get("prompt") or "", row.get("negative_prompt") or "")
            for row in rows}


def merge(style_text: str, prompt: str) -> str:
    """`prompt` under one style's text, as A1111 merges them."""
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def problems(params: dict[str, Any], paths: list[Path]) -> list[str]:
    """What is wrong with a cell's `styles`: each name no styles file defines."""
    wanted = names(params.get("styles"))
    if not wanted:
        return []
    known = table(paths)
    where = ", ".join(str(path) for path in paths) or f"no {FILE_NAME} next to the spec or in the models folder"
    return [f"style {name!r} is not defined (searched: {where}); add a row for it to {FILE_NAME} or fix the name"
            for name in wanted if name not in known]


def apply(params: dict[str, Any], paths: list[Path]) -> dict[str, Any]:
    """The cell's params with its styles applied to the prompt and negative prompt, in the order listed."""
    wanted = names(params.get("styles"))
    if not wanted:
        return params
    known = table(paths)
    prompt, negative = str(params.get("prompt") or ""), str(params.get("negative_prompt") or "")
    for name in wanted:
        prompt, negative = merge(known[name].prompt, prompt), merge(known[name].negative_prompt, negative)
    return {**params, "prompt": prompt, "negative_prompt": negative}
