"""Executors run a plan's cells through a backend and hand the results to the store."""

from gridgen.executors.local import RunSummary, run_local

__all__ = ["RunSummary", "run_local"]
