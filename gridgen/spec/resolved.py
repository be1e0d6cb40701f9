"""The spec as run, written to out/<grid>/spec.yaml: full form, with includes and variables resolved.

Every value is spelled out under its id, so the file loads back to the same axes, value ids and params.
"""

from __future__ import annotations

from typing import Any

from gridgen.spec.model import GridSpec


def resolved_form(spec: GridSpec) -> dict[str, Any]:
    """The spec as run, in full form with includes and variables resolved; it loads back unchanged."""
    meta = spec.meta
    grid: dict[str, Any] = {
        "title": meta.title, "author": meta.author, "description": meta.description, "format": meta.format,
        "stylesheet": meta.stylesheet, "skip_invalid": meta.skip_invalid, "backend": meta.backend,
        "params": dict(spec.base_params),
    }
    if meta.outpath:
        grid["outpath"] = meta.outpath
    if meta.models_dir:
        grid["models_dir"] = meta.models_dir
    grid.update({key: value for key, value in meta.page.items() if value is not None})
    axes = {}
    for axis in spec.axes:
        # Keyed by id, not by the key as written: repeated values (`seed: 1, 1`) keep one entry each.
        entry: dict[str, Any] = {"title": axis.title, "description": axis.description, "values": {
            value.id: {"title": value.title, "description": value.description, "params": dict(value.params),
                       "skip": value.skip, "show": value.show}
            for value in axis.values}}
        if axis.default:
            entry["default"] = axis.default
        axes[axis.id] = entry
    return {"grid": grid, "axes": axes}
