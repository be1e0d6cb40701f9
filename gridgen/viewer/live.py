"""Blueprint `live`: a Server-Sent Events stream per grid, fed by tailing its journal.jsonl.

The store appends one JSON line per finished cell (the line is written last, after the image), so
every new complete line is a new cell: it goes out as a `cell` event whose id is the number of
journal lines read so far. A page connects with `?from=N` where N is the `progress.done` of the
data.js it loaded: the first N lines of the journal hold at least the cells it has, so nothing it
lacks is skipped (a few it has may come again; the page ignores them). On reconnect the browser
sends `Last-Event-ID` and the stream goes on from there. A journal that shrinks or is replaced (a
run with --overwrite) restarts the stream from line 0 with a `reset` event. Changes of grid.json's
progress (running, done, failed) go out as `progress` events.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, request

from gridgen.viewer import catalog
from gridgen.viewer.security import deny
from gridgen.viewer.state import get_state

blueprint = Blueprint("live", __name__)


def cell_from_entry(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A journal line as the explorer's data.js lists a cell (the shape of Store.page_data's cells)."""
    key, image = entry.get("key"), entry.get("file")
    if not isinstance(key, str) or not isinstance(image, str):
        return None
    return {"key": key, "cell": {"image": image, "thumb": entry.get("thumb"), "seed": entry.get("seed"),
                                 "params": entry.get("params", {}), "time": entry.get("time"),
                                 "hash": entry.get("hash"), "parameters": entry.get("parameters", "")}}


def _event(kind: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def _offset_of_line(path: Path, line: int) -> tuple[int, int]:
    """(byte offset after the first `line` complete lines, lines actually there)."""
    if line <= 0:
        return 0, 0
    offset = seen = 0
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            offset += len(raw)
            seen += 1
            if seen == line:
                break
    return offset, seen


def journal_events(journal: Path, read_progress: Callable[[], dict[str, Any] | None], start_line: int,
                   closing: threading.Event, poll_s: float = 0.2, heartbeat_s: float = 15.0) -> Iterator[str]:
    """The event stream of one grid: `hello`, then `cell`, `progress` and `reset` events as they happen."""
    yield "retry: 1000\n\n"
    line = max(0, start_line)
    offset, ident, buffer = 0, None, b""
    reset = False
    try:
        st = journal.stat()
        ident = (st.st_dev, st.st_ino)
        offset, seen = _offset_of_line(journal, line)
        if seen < line:  # the page knows more cells than the journal has lines: it was replaced
            reset, line, offset = True, 0, 0
    except OSError:
        line = 0
    progress = read_progress()
    yield _event("hello", {"line": line, "progress": progress})
    if reset:
        yield _event("reset", {"line": 0}, 0)
    quiet = 0.0
    while not closing.is_set():
        sent = False
        try:
            st = journal.stat()
        except OSError:
            st = None
        if st is not None:
            now_ident = (st.st_dev, st.st_ino)
            if ident is not None and (now_ident != ident or st.st_size < offset):
                offset, line, buffer = 0, 0, b""
                yield _event("reset", {"line": 0}, 0)
                sent = True
            ident = now_ident
            if st.st_size > offset:
                with open(journal, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read(st.st_size - offset)
                offset += len(chunk)
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    line += 1
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue
                    cell = cell_from_entry(entry) if isinstance(entry, dict) else None
                    if cell is not None:
                        yield _event("cell", cell, line)
                        sent = True
        latest = read_progress()
        if latest is not None and latest != progress:
            progress = latest
            yield _event("progress", progress)
            sent = True
        quiet = 0.0 if sent else quiet + poll_s
        if quiet >= heartbeat_s:
            quiet = 0.0
            yield ": keep-alive\n\n"
        closing.wait(poll_s)


def _start_line() -> int:
    for raw in (request.headers.get("Last-Event-ID"), request.args.get("from")):
        if raw is not None:
            try:
                return max(0, int(raw))
            except ValueError:
                return 0
    return 0


@blueprint.get("/live/", defaults={"gid": ""}, endpoint="root_events")
@blueprint.get("/live/<path:gid>")
def events(gid: str):
    state = get_state()
    folder = catalog.grid_path(state.root, gid.rstrip("/"))
    if folder is None:
        return deny(404, "no such grid")
    grid_json = folder / catalog.GRID_FILE
    cache = state.cache

    def read_progress() -> dict[str, Any] | None:
        data = cache.read(grid_json)
        return catalog.progress_of(data) if data is not None else None

    stream = journal_events(folder / "journal.jsonl", read_progress, _start_line(), state.closing,
                            state.sse_poll_s, state.sse_heartbeat_s)
    return Response(stream, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

