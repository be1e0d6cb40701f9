"""Owns the one thread that renders queued runs, oldest first, with `runner.execute` (the CLI's
executor). A cancel sets the running grid's stop event: the batch in flight finishes and is written,
then the run ends as `cancelled`. When the app shuts down the run in flight stops the same way but
goes back to the queue, so the next start of the server resumes it.
"""

from __future__ import annotations

import sys
import threading
import traceback
from typing import TYPE_CHECKING

from gridgen.runner import execute
from gridgen.viewer import db, specs

if TYPE_CHECKING:
    from gridgen.viewer.state import ViewerState

IDLE_WAIT_S = 1.0


class RunWorker:
    def __init__(self, state: ViewerState):
        self.state = state
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._current: tuple[int, threading.Event] | None = None
        self._thread = threading.Thread(target=self._loop, name="gridgen-viewer-runs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """A run was queued: look at the queue now rather than at the next poll."""
        self._wake.set()

    def cancel(self, run_id: int) -> None:
        """Stop run `run_id` after its batch in flight if it is the one rendering."""
        with self._lock:
            if self._current is not None and self._current[0] == run_id:
                self._current[1].set()

    def stop(self, timeout: float = 30.0) -> None:
        self.state.closing.set()
        with self._lock:
            if self._current is not None:
                self._current[1].set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self.state.closing.is_set():
            run = self.state.db.claim_next()
            if run is None:
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                continue
            self._render(run)

    def _render(self, run: dict) -> None:
        database = self.state.db
        stop = threading.Event()
        with self._lock:
            self._current = (run["id"], stop)
        try:
            checked = specs.check(run["spec"], run["filename"], run["name"], self.state.root, self.state.models_dir)
        except specs.SubmissionError as err:
            database.finish(run["id"], db.FAILED, "the spec no longer validates", err.problems)
            self._clear()
            return
        except Exception as err:  # a bug, not the user's doing: keep the worker alive, record it
            traceback.print_exc(file=sys.stderr)
            database.finish(run["id"], db.FAILED, f"internal error: {err}")
            self._clear()
            return
        if database.status(run["id"]) == db.CANCELLING or self.state.closing.is_set():
            checked.prepared.plan.backend.close()
            if self.state.closing.is_set() and database.status(run["id"]) != db.CANCELLING:
                database.finish(run["id"], db.QUEUED, "interrupted by a server shutdown; resumes at the next start")
            else:
                database.finish(run["id"], db.CANCELLED, "cancelled before it started")
            self._clear()
            return
        try:
            summary = execute(checked.prepared, checked.options, show_progress=False, stop=stop)
        except Exception as err:
            traceback.print_exc(file=sys.stderr)
            database.finish(run["id"], db.FAILED, f"{type(err).__name__}: {err}")
            self._clear()
            return
        text = "; ".join(summary.lines())
        if summary.errors:
            text += "; " + "; ".join(summary.errors[:3])
        cancelled = database.status(run["id"]) == db.CANCELLING
        if summary.interrupted and cancelled:
            database.finish(run["id"], db.CANCELLED, "cancelled: " + text)
        elif summary.interrupted:  # the server is shutting down: resume at the next start
            database.finish(run["id"], db.QUEUED, "interrupted by a server shutdown; resumes at the next start")
        else:
            database.finish(run["id"], db.FAILED if summary.failed else db.DONE, text)
        self._clear()

    def _clear(self) -> None:
        with self._lock:
            self._current = None
