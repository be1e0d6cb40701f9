"""A cell's HDR brackets as rows of the batch it renders in, and their merge back into the cell's result.

`rows` turns each HDR cell into one `Bracket` per exposure: a copy of the cell (same seed and params) whose params
carry the exposure the colour grading adds (none for the middle bracket, which is then the cell's own render, and
shares its stage-cache entry with the same cell without HDR). `batches` cuts the rows into batches of at most
`max_batch` rows, never splitting one cell's brackets, so they always render together; other cells fill the rest.
`merged` waits for the brackets' images, fuses them (`fusion`) and hands back one result per cell: the merged
image, its 16-bit pixels when asked, and the brackets as the extra files `bracket_1` (darkest) to `bracket_N`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gridgen.backends.base import Cell, Result
from gridgen.backends.sd.denoise.controls.options import EXPOSURE
from gridgen.backends.sd.hdr import fusion
from gridgen.backends.sd.hdr.options import exposures, hdr_on
from gridgen.params import Registry

_DEFAULTS = Registry().defaults()


@dataclass
class Bracket(Cell):
    """One bracket of `of`, the `number`th of `count` (1 the darkest)."""

    of: Cell = field(default=None, repr=False)  # type: ignore[assignment]
    number: int = 1
    count: int = 1


def rows(cell: Cell) -> list[Cell]:
    """The batch rows of `cell`: itself, or its brackets darkest first."""
    if not hdr_on(cell.params):
        return [cell]
    count = int(cell.params["hdr_brackets"])
    gap = float(cell.params.get("hdr_gap", _DEFAULTS["hdr_gap"]))
    found = []
    for number, exposure in enumerate(exposures(count, gap), 1):
        params = {**cell.params, EXPOSURE: exposure} if exposure else dict(cell.params)
        found.append(Bracket(cell.index, f"{cell.key}#bracket_{number}", cell.coords, params, cell.skip,
                             cell.image_path, cell.thumb_path, cell.param_locations, of=cell, number=number,
                             count=count))
    return found


def batches(cells: Iterable[Cell], max_batch: int) -> Iterator[list[Cell]]:
    """The cells' rows in batches of at most `max_batch` rows; a cell with more brackets than that is a batch."""
    batch: list[Cell] = []
    for cell in cells:
        cell_rows = rows(cell)
        if batch and len(batch) + len(cell_rows) > max_batch:
            yield batch
            batch = []
        batch.extend(cell_rows)
    if batch:
        yield batch


def merged(results: Iterable[Result]) -> list[Result]:
    """One result per cell: plain cells' as they come, each HDR cell's brackets fused into one."""
    out: list[Result] = []
    groups: dict[int, list[Result]] = {}
    for result in results:
        if isinstance(result.cell, Bracket):
            groups.setdefault(id(result.cell.of), []).append(result)
        else:
            out.append(result)
    return out + [merge(group) for group in groups.values()]


def merge(brackets: list[Result]) -> Result:
    """The cell's result from its brackets' results (all of them, in any order)."""
    brackets = sorted(brackets, key=lambda result: result.cell.number)
    cell = brackets[0].cell.of
    images = [result.image for result in brackets]  # waits for their decodes
    started = time.perf_counter()
    params = {**_DEFAULTS, **cell.params}
    image, deep = fusion.merge(images, float(params["hdr_gamma"]), int(params["hdr_depth"]))
    timings: dict[str, float] = {}
    for result in brackets:
        for stage, seconds in result.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    timings["hdr"] = time.perf_counter() - started
    middle = brackets[len(brackets) // 2]
    files = {f"bracket_{result.cell.number}": result.image for result in brackets}
    return Result(cell, image, metadata=dict(middle.metadata), timings=timings, files=files, deep=deep)
