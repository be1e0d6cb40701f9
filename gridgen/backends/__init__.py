"""Backends: the interface they implement, and finding one by name.

Backends register in the `gridgen.backends` entry-point group (the built-in `diffusers` one too),
so a third-party package adds a backend by declaring an entry point, with no change to gridgen.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from gridgen.backends.base import Backend, BackendContext, ParamProblem, Result
from gridgen.errors import GridError

ENTRY_POINT_GROUP = "gridgen.backends"

__all__ = ["Backend", "BackendContext", "ParamProblem", "Result", "available_backends", "load_backend"]


def available_backends() -> list[str]:
    """Names of the installed backends, sorted."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_backend(name: str, context: BackendContext) -> Backend:
    """Instantiate the backend registered as `name`; raises GridError naming the available ones."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        names = ", ".join(available_backends()) or "none (is gridgen installed? try `pip install -e .`)"
        raise GridError(f"unknown backend {name!r}; available backends: {names}")
    return found[0].load()(context)
