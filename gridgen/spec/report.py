"""`gridgen validate --json`: a loaded grid and its problems as one JSON-ready dict, a stable format for tools.

    {"spec": path, "ok": bool, "title": str, "params": {...},      the grid's own params
     "axes": [{"id", "title", "description", "default",            default: a value id or null
               "values": [{"id", "title", "description", "params", "skip", "show"}]}],
     "cell_count": int, "render_count": int,                       cells, and those no skipped value touches
     "cells": [{"key": "v1/v2/...", "skip": bool}] or null,        null above CELL_LIST_LIMIT cells
     "warnings": [problem], "errors": [problem]}                    problem: {"message", "file", "line", "column"}

Cells are listed in the product order of the axes as written; a cell's key is its image path under
`images/` without the extension. Counting never lists: both counts are products over the axes.
Problems, here and wherever gridgen prints them, come in file and line order (`in_file_order`).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from gridgen.errors import Problem
from gridgen.spec.model import GridSpec

CELL_LIST_LIMIT = 10_000


def in_file_order(problems: list[Problem], spec_path: Path) -> list[Problem]:
    """`problems` in the order a user reads them: the command line's (`--set`) first, then the spec's by line and
    column, then included files' by name and line; problems at one place keep the order they were found in."""
    spec_path = Path(spec_path).resolve()
    own_files: dict[Path, bool] = {}  # a file named by many problems is resolved once

    def place(problem: Problem) -> tuple:
        where = problem.location
        if where is None or where.file is None:
            return (0, "", 0, 0)
        if where.file not in own_files:
            own_files[where.file] = Path(where.file).resolve() == spec_path
        own = own_files[where.file]
        return (1 if own else 2, "" if own else str(where.file), where.line, where.col)

    return sorted(problems, key=place)


def problem_json(problem: Problem) -> dict[str, Any]:
    where = problem.location
    return {"message": problem.message, "file": str(where.file) if where and where.file else None,
            "line": where.line if where and where.line else None,
            "column": where.col if where and where.col else None}


def grid_report(spec_path: str, spec: GridSpec | None, problems: list[Problem]) -> dict[str, Any]:
    """The report of one spec; `spec` is None where it did not load, and then only the problems are known."""
    errors = [problem_json(p) for p in problems if p.severity == "error"]
    warnings = [problem_json(p) for p in problems if p.severity != "error"]
    report: dict[str, Any] = {"spec": spec_path, "ok": not errors, "title": None, "params": {}, "axes": [],
                              "cell_count": 0, "render_count": 0, "cells": None}
    if spec is not None:
        axes = spec.axes
        report.update(
            title=spec.meta.title,
            params=dict(spec.base_params),
            axes=[{"id": axis.id, "title": axis.title, "description": axis.description, "default": axis.default,
                   "values": [{"id": value.id, "title": value.title, "description": value.description,
                               "params": dict(value.params), "skip": value.skip, "show": value.show}
                              for value in axis.values]}
                  for axis in axes],
            cell_count=spec.cell_count,
            render_count=math.prod(sum(not value.skip for value in axis.values) for axis in axes),
        )
        if spec.cell_count <= CELL_LIST_LIMIT:
            report["cells"] = [{"key": "/".join(value.id for value in picked),
                                "skip": any(value.skip for value in picked)}
                               for picked in itertools.product(*(axis.values for axis in axes))]
    report.update(warnings=warnings, errors=errors)
    return report
