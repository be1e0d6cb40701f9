"""The `swatch` backend: each cell drawn as stripes, checks or a solid field of palette colours.

It exists to prove gridgen's backend seam, so it uses nothing of gridgen but `gridgen.backends.base`,
and it keeps every contract a real backend keeps: built from the run's context, it finds its palette
files where `locate` says, reports bad params with the param to blame, batches cells by size and
pattern, draws a whole batch before returning any of it, and signals a batch too large for its
(simulated) memory with `BatchOutOfMemory`. Drawing is deterministic across processes, so a cell drawn
by a Ray worker is byte-identical to one drawn locally.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gridgen.backends.base import (
    BackendContext,
    BatchOutOfMemory,
    Cell,
    GridError,
    Param,
    ParamProblem,
    Result,
)

PATTERNS = ("stripes", "checks", "solid")
RAINBOW = ("#e6194b", "#f58231", "#ffe119", "#3cb44b", "#4363d8", "#911eb4")
DEFAULT_SIZE = (64, 48)  # used when the spec sets no width or height, as a model's native size would be
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


def _choose_pattern(text: str) -> str | None:
    value = text.strip().lower()
    return value if value in PATTERNS else None


PARAMS = [
    Param("pattern", "choice", "stripes", "How the palette is laid out: stripes, checks or solid.",
          choose=_choose_pattern, choices_help=", ".join(PATTERNS)),
    Param("palette", "path", None, "A text file of #rrggbb colours, one a line, next to the spec or in the models "
          "folder's palettes/; default: a six-colour rainbow."),
    Param("swatch_memory", "int", 0, "Cells one batch may hold before the backend reports running out of "
          "memory (0: no limit); it stands in for a device's memory.", min=0),
]


class SwatchBackend:
    name = "swatch"

    def __init__(self, context: BackendContext):
        self.context = context
        self.batches: list[int] = []  # the size of every batch drawn, in order
        self._palettes: dict[Path, tuple[str, ...]] = {}

    def supported_params(self) -> set[str]:
        return {"prompt", "seed", "width", "height", "format"}

    def extra_params(self) -> list[Param]:
        return list(PARAMS)

    def locate(self, param: str, value: str) -> Path | None:
        if param != "palette":
            return None
        raw = Path(value).expanduser()
        candidates = [raw] if raw.is_absolute() else [Path(self.context.spec_dir) / raw]
        if self.context.models_dir and not raw.is_absolute():
            candidates.append(Path(self.context.models_dir) / "palettes" / raw)
        for candidate in candidates:
            if candidate.is_file():
                return candidate.resolve()
        raise GridError(f"palette {value!r} not found: looked for {', '.join(map(str, candidates))}; put the file "
                        "next to the spec or in the models folder's palettes/")

    def _palette(self, params: dict[str, Any]) -> tuple[str, ...]:
        if not params.get("palette"):
            return RAINBOW
        path = self.locate("palette", str(params["palette"]))
        if path not in self._palettes:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            colours = tuple(line for line in lines if line and not line.startswith("//"))
            bad = next((number for number, line in enumerate(lines, 1)
                        if line and not line.startswith("//") and not _COLOUR.match(line)), None)
            if bad is not None or not colours:
                reason = f"line {bad} is not a #rrggbb colour" if bad else "it holds no colour"
                raise GridError(f"palette {params['palette']!r}: {path}: {reason}")
            self._palettes[path] = colours
        return self._palettes[path]

    def validate(self, params: dict[str, Any]) -> list[ParamProblem]:
        problems = []
        try:
            self._palette(params)
        except GridError as err:
            problems.append(ParamProblem("palette", str(err)))
        width, height = _size(params)
        if params["pattern"] == "checks" and min(width, height) < 16:
            problems.append(ParamProblem("pattern", f"checks need at least 16x16 pixels, got {width}x{height}; "
                                                    "use stripes or a larger size"))
        return problems

    def load_key(self, params: dict[str, Any]) -> Hashable:
        return ("palette", str(params.get("palette") or "rainbow"))

    def describe_load(self, params: dict[str, Any]) -> str:
        return f"swatch palette {params.get('palette') or 'rainbow'}"

    def batch_key(self, params: dict[str, Any]) -> Hashable:
        return (*_size(params), params["pattern"], params["swatch_memory"])

    def fit_batch(self, params: dict[str, Any], wanted: int) -> int:
        return wanted

    def render(self, cells: list[Cell]) -> Iterator[Result]:
        limit = cells[0].params["swatch_memory"]
        if limit and len(cells) > limit:
            raise BatchOutOfMemory(len(cells))
        results = [self._draw(cell) for cell in cells]  # the whole batch before any of it: all or nothing
        self.batches.append(len(cells))
        return iter(results)

    def _draw(self, cell: Cell) -> Result:
        started = time.perf_counter()
        params = cell.params
        palette = self._palette(params)
        # The seed picks the first colour and the prompt the order; hashlib, not hash(), so every process agrees.
        shift = int(params["seed"]) + int(hashlib.sha256(str(params.get("prompt", "")).encode()).hexdigest(), 16)
        colours = np.array([_rgb(palette[(shift + i) % len(palette)]) for i in range(len(palette))], dtype=np.uint8)
        width, height = _size(params)
        columns = np.arange(width) * len(colours) // width
        if params["pattern"] == "solid":
            index = np.zeros((height, width), dtype=int)
        elif params["pattern"] == "checks":
            rows = np.arange(height)[:, None] // 8
            index = (columns[None, :] + rows) % len(colours)
        else:
            index = np.broadcast_to(columns, (height, width))
        image = Image.fromarray(colours[index], "RGB")
        metadata = {"width": width, "height": height, "palette": params.get("palette") or "rainbow",
                    "first_colour": palette[shift % len(palette)]}
        return Result(cell, image, metadata=metadata, timings={"draw": time.perf_counter() - started})

    def stats(self) -> list[str]:
        return [f"swatch: drew batches of {', '.join(map(str, self.batches)) or 'none'}"]

    def close(self) -> None:
        self._palettes.clear()


def _size(params: dict[str, Any]) -> tuple[int, int]:
    return int(params.get("width") or DEFAULT_SIZE[0]), int(params.get("height") or DEFAULT_SIZE[1])


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
