"""Helpers for spec tests: write a YAML spec to a temp folder and load it or collect its problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

from gridgen.errors import SpecError
from gridgen.spec import load_spec

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "infinity-grid"


def write_spec(folder: Path, text: str, name: str = "grid.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path: Path, **kwargs) -> list:
    try:
        load_spec(path, **kwargs)
    except SpecError as err:
        return [p for p in err.problems if p.severity == "error"]
    raise AssertionError("the spec loaded without problems")
