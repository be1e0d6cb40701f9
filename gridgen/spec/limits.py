"""Caps on the work a spec can ask for, checked by arithmetic before anything is expanded or listed.

A spec is a few lines of text, but `seed: 1-100000000`, sixty two-value axes or a chain of
variables that each repeat the next can ask for more cells, values or characters than any machine
holds. Every cap here is checked on counts (a range's length from its ends and step, the grid's
cell count as a product), so a refusal costs as little as the text that asked. The caps can be
raised (`--max-axis-values`, `--max-cells`) by those who mean it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gridgen.errors import Location, Problem, SpecError

if TYPE_CHECKING:
    from gridgen.spec.model import Axis

MAX_TEXT_CHARS = 100_000  # one value after variables are substituted


class OverCap(Problem):
    """A problem that is the spec asking for more than a cap allows (the viewer answers it with 413)."""


class CapExceeded(ValueError):
    """Raised while expanding values, before they are listed, when they would pass a cap."""


@dataclass(frozen=True)
class Limits:
    max_axis_values: int = 10_000
    max_cells: int = 1_000_000


DEFAULT_LIMITS = Limits()


def values_over_cap(count: int, limits: Limits, what: str) -> str | None:
    """The message for an axis whose `what` (a range, a fill, a list) would give `count` values, if too many."""
    if count <= limits.max_axis_values:
        return None
    shown = f"{count:,}" if count < 10**15 else f"about 10^{len(str(count)) - 1}" if count < 10**300 else "over 10^300"
    return (f"{what} gives {shown} values, more than the cap of {limits.max_axis_values:,} values per axis; "
            "use a coarser step, or raise the cap with --max-axis-values")


def axis_problem(axis: Axis, limits: Limits) -> Problem | None:
    message = values_over_cap(len(axis.values), limits, f"axis '{axis.title}'")
    return OverCap(message, axis.location) if message else None


def cells_problem(axes: list[Axis], limits: Limits, where: Location | None) -> Problem | None:
    """A problem naming the cell count and the largest axes when the product exceeds `max_cells`."""
    count = 1
    for axis in axes:
        count *= max(len(axis.values), 1)
    if count <= limits.max_cells:
        return None
    largest = sorted(axes, key=lambda axis: -len(axis.values))[:3]
    shown = ", ".join(f"'{axis.title}' ({len(axis.values)} values, line {axis.location.line if axis.location else '?'})"
                      for axis in largest)
    size = f"{count:,}" if count < 10**15 else f"about 10^{len(str(count)) - 1}"
    return OverCap(f"the grid has {size} cells from {len(axes)} axes, more than the cap of {limits.max_cells:,} "
                   f"cells; the largest axes are {shown}. Remove values or axes, or raise the cap with --max-cells",
                   where)


def substitute_variables(text: str, variables: dict[str, str], where: Location | None) -> str:
    """`text` with every variable replaced in turn, its name matched whatever its case (Infinity Grid lower-cases
    names); refused before any step would pass MAX_TEXT_CHARS."""
    for key, value in variables.items():
        if not key:
            continue
        pattern = re.compile(re.escape(key), re.IGNORECASE)
        found = [match.end() - match.start() for match in pattern.finditer(text)]
        grown = len(text) + len(found) * len(value) - sum(found)
        if grown > MAX_TEXT_CHARS:
            raise SpecError([OverCap(
                f"substituting the variable '{key[:40]}' makes this value {grown:,} characters long, more than "
                f"the cap of {MAX_TEXT_CHARS:,}; variables that repeat other variables multiply, so shorten them",
                where)])
        text = pattern.sub(lambda _, value=value: value, text)
    return text
