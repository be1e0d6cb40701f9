"""The errors a user can cause, and the located problems they carry.

Every problem a user can fix points at the file, line and column it came from, so the CLI can print
`FILE:LINE:COL: message` lines and exit 2 without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Location:
    """A position in a source file; line and column count from 1."""

    file: Path | None
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        name = str(self.file) if self.file else "<command line>"
        return f"{name}:{self.line}:{self.col}" if self.line else name


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input, where it is, and what to do about it."""

    message: str
    location: Location | None = None
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}{prefix}{self.message}"


class GridError(Exception):
    """Base of every error the user can cause; the CLI prints it without a traceback and exits 2."""

    exit_code = 2


class SpecError(GridError):
    """One or more problems found in a grid spec; `problems` holds all of them, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ModelError(GridError):
    """A model, VAE or other weight file cannot be found or loaded."""
