"""The loaded grid: `GridSpec` and its parts, plain data with the source location of each piece."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridgen.errors import Location, Problem

# Page defaults a spec's `grid:` block may set, with their defaults (Infinity Grid names, snake_cased).
PAGE_DEFAULTS: dict[str, Any] = {
    "show_descriptions": True,
    "autoscale": False,
    "sticky": False,
    "sticky_labels": True,
    "x_axis": None,
    "y_axis": None,
    "x_super_axis": None,
    "y_super_axis": None,
}


@dataclass
class AxisValue:
    id: str  # slug of the value key, unique in its axis: used in image paths and URLs (see spec/ids.py)
    key: str  # the key as written
    title: str
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # canonical name -> coerced value
    skip: bool = False
    show: bool = True
    location: Location | None = None
    # Where each param was set, so later problems (a missing model) point at the right line.
    param_locations: dict[str, Location] = field(default_factory=dict)


@dataclass
class Axis:
    id: str
    title: str
    description: str = ""
    default: str | None = None  # a value id
    values: list[AxisValue] = field(default_factory=list)
    location: Location | None = None

    def value(self, value_id: str) -> AxisValue:
        return next(v for v in self.values if v.id == value_id)


@dataclass
class GridMeta:
    title: str = "gridgen grid"
    author: str = ""
    description: str = ""  # HTML, as in Infinity Grid files
    format: str = "png"
    stylesheet: str = ""
    outpath: str | None = None
    skip_invalid: bool = False
    backend: str = "diffusers"
    models_dir: str | None = None
    page: dict[str, Any] = field(default_factory=lambda: dict(PAGE_DEFAULTS))


@dataclass
class GridSpec:
    path: Path
    meta: GridMeta
    base_params: dict[str, Any]
    axes: list[Axis]
    base_locations: dict[str, Location] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)
    # Errors found while reading (a spec from `read_spec`); what they concern is left out of the spec, so the
    # backend's checks can still run over the rest and every problem is reported in one pass.
    problems: list[Problem] = field(default_factory=list)
    # The spec as run, with includes and variables resolved, for out/<grid>/spec.yaml.
    resolved: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def cell_count(self) -> int:
        count = 1
        for axis in self.axes:
            count *= len(axis.values)
        return count
