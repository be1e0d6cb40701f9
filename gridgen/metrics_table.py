"""`gridgen export OUTDIR --metrics`: an output folder's axis influence and image metrics as CSV.

Two tables, picked by name, both read from grid.json (the numbers the run published; nothing is
recomputed):

- `influence`: one row per axis, most influential first (mean delta E of the image pairs that differ in
  that axis alone, their mean SSIM, the pair count), each followed by a row per value (its mean distance
  from the axis's other values, and the neighbour it nearly duplicates, if any);
- `cells`: one row per rendered cell: its key, its value on each axis, and its image metrics.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, TextIO

from gridgen.errors import GridError
from gridgen.explorer import read_grid_json
from gridgen.metrics import METRICS

TABLES = ("influence", "cells")
INFLUENCE_COLUMNS = ["rank", "axis", "axis_title", "value", "value_title", "delta_e", "ssim", "pairs", "duplicate_of"]


def _title(item: dict[str, Any]) -> str:
    return str(item.get("title") or item.get("id"))


def write_metrics_csv(out_dir: Path, table: str, stream: TextIO) -> None:
    """Write table `table` (`influence` or `cells`) of the grid in `out_dir` to `stream` as CSV."""
    if table not in TABLES:
        raise GridError(f"--metrics {table!r}: name one of {', '.join(TABLES)}")
    data = read_grid_json(out_dir)
    if "influence" not in data:
        raise GridError(f"{Path(out_dir) / 'grid.json'} has no metrics: it was written by an older gridgen; "
                        "run the grid again with `gridgen run SPEC` to add them (rendered cells are kept)")
    writer = csv.writer(stream, lineterminator="\n")
    if table == "influence":
        _influence(data, writer)
    else:
        _cells(data, writer)


def _influence(data: dict[str, Any], writer) -> None:
    axes = {axis["id"]: axis for axis in data["axes"]}
    ranked = sorted((entry for entry in data["influence"] if entry["axis"] in axes),
                    key=lambda entry: -1 if entry["distance"] is None else entry["distance"], reverse=True)
    writer.writerow(INFLUENCE_COLUMNS)
    for rank, entry in enumerate(ranked, start=1):
        axis = axes[entry["axis"]]
        writer.writerow([rank, axis["id"], _title(axis), "", "", _blank(entry["distance"]), _blank(entry["ssim"]),
                         entry["pairs"], ""])
        for value in axis["values"]:
            if value["id"] in entry["values"]:
                writer.writerow(["", axis["id"], _title(axis), value["id"], _title(value),
                                 entry["values"][value["id"]], "", "", entry["duplicates"].get(value["id"], "")])


def _cells(data: dict[str, Any], writer) -> None:
    axes = [axis["id"] for axis in data["axes"]]
    writer.writerow(["key", *axes, *METRICS])
    for key, cell in sorted((data.get("cells") or {}).items()):
        metrics = cell.get("metrics") or {}
        writer.writerow([key, *key.split("/"), *(_blank(metrics.get(name)) for name in METRICS)])


def _blank(number: float | None) -> Any:
    return "" if number is None else number
