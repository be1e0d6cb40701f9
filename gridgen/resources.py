"""Finds the data folders that ship with gridgen (`axes/`, `templates/`, `static/`, the tiny models).

In a wheel they live under `gridgen/_data/`; in a source checkout they are the top-level folders
next to the package. Nothing here looks at the current working directory.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder `name` (`axes`, `templates` or `static`) wherever this install keeps it."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"gridgen's {name}/ folder is missing from this install ({_PACKAGE})")
