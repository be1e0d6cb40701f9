"""Owns the viewer's SQLite file under the root (`ROOT/.gridgen-viewer.sqlite3`): favourites and
the run queue. Every call opens its own short connection, so request threads and the run worker
never share one; WAL mode lets readers go on while the worker writes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DB_NAME = ".gridgen-viewer.sqlite3"

QUEUED, RUNNING, CANCELLING, DONE, CANCELLED, FAILED = "queued", "running", "cancelling", "done", "cancelled", "failed"
FINISHED = (DONE, CANCELLED, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS favourites (
    grid TEXT NOT NULL,
    key TEXT NOT NULL,
    added TEXT NOT NULL,
    PRIMARY KEY (grid, key)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    filename TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    message TEXT NOT NULL DEFAULT '',
    problems TEXT NOT NULL DEFAULT '[]'
);
"""
_RUN_FIELDS = "id, name, filename, status, created, started, finished, message, problems"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Database:
    def __init__(self, path: Path):
        self.path = Path(path)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        finally:
            conn.close()

    # ---- favourites ----

    def favourites(self, grid: str | None = None) -> list[dict[str, Any]]:
        with self._connect() as conn:
            if grid is None:
                rows = conn.execute("SELECT grid, key, added FROM favourites ORDER BY grid, added, key")
            else:
                rows = conn.execute("SELECT grid, key, added FROM favourites WHERE grid = ? ORDER BY added, key",
                                    (grid,))
            return [dict(row) for row in rows]

    def add_favourite(self, grid: str, key: str) -> bool:
        """Star a cell; False when it was starred already."""
        with self._connect() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO favourites (grid, key, added) VALUES (?, ?, ?)",
                               (grid, key, _now()))
            return cur.rowcount > 0

    def remove_favourite(self, grid: str, key: str) -> bool:
        with self._connect() as conn:
            return conn.execute("DELETE FROM favourites WHERE grid = ? AND key = ?", (grid, key)).rowcount > 0

    # ---- the run queue ----

    @staticmethod
    def _run(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        run = dict(row)
        run["problems"] = json.loads(run.get("problems") or "[]")
        return run

    def add_run(self, name: str, filename: str, spec: str) -> dict[str, Any]:
        with self._connect() as conn:
            cur = conn.execute("INSERT INTO runs (name, filename, spec, status, created) VALUES (?, ?, ?, ?, ?)",
                               (name, filename, spec, QUEUED, _now()))
            return self.run(cur.lastrowid)

    def runs(self) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return [self._run(row) for row in conn.execute(f"SELECT {_RUN_FIELDS} FROM runs ORDER BY id")]

    def run(self, run_id: int, with_spec: bool = False) -> dict[str, Any] | None:
        fields = _RUN_FIELDS + (", spec" if with_spec else "")
        with self._connect() as conn:
            return self._run(conn.execute(f"SELECT {fields} FROM runs WHERE id = ?", (run_id,)).fetchone())

    def active_names(self) -> set[str]:
        with self._connect() as conn:
            rows = conn.execute("SELECT name FROM runs WHERE status IN (?, ?, ?)", (QUEUED, RUNNING, CANCELLING))
            return {row["name"] for row in rows}

    def claim_next(self) -> dict[str, Any] | None:
        """Mark the oldest queued run as running and return it (with its spec); None when none waits."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT id FROM runs WHERE status = ? ORDER BY id LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                conn.execute("COMMIT")
                return None
            conn.execute("UPDATE runs SET status = ?, started = ? WHERE id = ?", (RUNNING, _now(), row["id"]))
            conn.execute("COMMIT")
        return self.run(row["id"], with_spec=True)

    def finish(self, run_id: int, status: str, message: str = "", problems: list[str] | None = None) -> None:
        finished = _now() if status in FINISHED else None
        with self._connect() as conn:
            conn.execute("UPDATE runs SET status = ?, finished = ?, message = ?, problems = ? WHERE id = ?",
                         (status, finished, message, json.dumps(problems or []), run_id))

    def cancel(self, run_id: int) -> str | None:
        """Cancel a queued run at once, or mark a running one `cancelling`; returns the new status, or
        None when the run does not exist or has finished."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            status = None
            if row is not None and row["status"] == QUEUED:
                status = CANCELLED
                conn.execute("UPDATE runs SET status = ?, finished = ?, message = ? WHERE id = ?",
                             (CANCELLED, _now(), "cancelled before it started", run_id))
            elif row is not None and row["status"] in (RUNNING, CANCELLING):
                status = CANCELLING
                conn.execute("UPDATE runs SET status = ? WHERE id = ?", (CANCELLING, run_id))
            conn.execute("COMMIT")
            return status

    def status(self, run_id: int) -> str | None:
        with self._connect() as conn:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            return row["status"] if row else None

    def recover(self) -> None:
        """After a restart: a run that was rendering goes back to the queue (it resumes where it
        stopped); one that was being cancelled is cancelled."""
        with self._connect() as conn:
            conn.execute("UPDATE runs SET status = ?, message = ? WHERE status = ?",
                         (QUEUED, "resumes after a server restart", RUNNING))
            conn.execute("UPDATE runs SET status = ?, finished = ?, message = ? WHERE status = ?",
                         (CANCELLED, _now(), "cancelled", CANCELLING))
