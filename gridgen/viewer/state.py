"""Owns the per-app state of one viewer: its configuration, the SQLite file, the grid.json cache,
the run worker and the event that tells streams and the worker to stop.

It lives in `app.extensions["gridgen_viewer"]`; `get_state()` finds it from inside a request.
Nothing is kept at module level, so two apps never share state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, current_app

from gridgen.viewer.catalog import GridCache
from gridgen.viewer.db import Database

if TYPE_CHECKING:
    from gridgen.viewer.worker import RunWorker

EXTENSION = "gridgen_viewer"


@dataclass
class ViewerState:
    root: Path  # resolved
    token: str | None
    allow_runs: bool
    models_dir: Path | None  # resolved
    max_upload_bytes: int
    db: Database
    cache: GridCache = field(default_factory=GridCache)
    closing: threading.Event = field(default_factory=threading.Event)
    worker: RunWorker | None = None
    sse_poll_s: float = 0.2
    sse_heartbeat_s: float = 15.0
    check_timeout_s: float = 60.0  # a submitted spec's check runs in a child killed past these
    check_memory_mb: float = 2048.0

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the worker (after the batch in flight; its run resumes at the next start) and end
        every event stream."""
        self.closing.set()
        if self.worker is not None:
            self.worker.stop(timeout)


def get_state(app: Flask | None = None) -> ViewerState:
    return (app or current_app).extensions[EXTENSION]
