"""Checks a browser-submitted spec in a child process that is killed past a time or memory limit.

The spec is anyone's text, and checking it means parsing, expanding and validating every cell: the
caps in `gridgen.spec.limits` bound that work, and this module bounds whatever slips past them, so
one request can neither hold a server thread for minutes nor take the server's memory. The child
is forked from a server process that has gridgen's checking code already imported, so a check
starts in milliseconds. The temporary spec file is written and removed here, in the parent, so it
is gone whether the child finishes, fails or is killed.
"""

from __future__ import annotations

import multiprocessing
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from gridgen.viewer import specs

_POLL_S = 0.02
_PRELOAD = ["gridgen.viewer.specs", "gridgen.backends.diffusers_backend"]


@dataclass
class Verdict:
    """What the check found: `status` 201 (it may be queued), 413 (over a cap or limit) or 422."""

    status: int
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cells: int = 0


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def _child(connection, temp: str, filename: str, name: str, root: str, models_dir: str | None) -> None:
    try:
        checked = specs.check_file(Path(temp), filename, name, Path(root), Path(models_dir) if models_dir else None)
    except specs.SubmissionError as err:
        connection.send(Verdict(413 if err.too_large else 422, problems=err.problems))
        return
    checked.prepared.plan.backend.close()
    connection.send(Verdict(201, warnings=checked.warnings, cells=checked.prepared.plan.total))


def _resident_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            found = re.search(r"^VmRSS:\s+(\d+) kB", status.read(), re.MULTILINE)
    except OSError:
        return 0.0
    return int(found.group(1)) / 1024 if found else 0.0


def check(text: str, filename: str, name: str, root: Path, models_dir: Path | None,
          timeout_s: float, memory_mb: float) -> Verdict:
    """`specs.check` of `text` in a child process; a child past `timeout_s` or `memory_mb` is killed (413)."""
    temp = specs.write_temp(text, root)
    context = _context()
    receiver, sender = context.Pipe(duplex=False)
    models = str(models_dir) if models_dir else None
    child = context.Process(target=_child, daemon=True, name="gridgen-spec-check",
                            args=(sender, str(temp), filename, name, str(root), models))
    try:
        child.start()
        sender.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if receiver.poll(_POLL_S):
                try:
                    return receiver.recv()
                except EOFError:  # the child died without an answer
                    return Verdict(500, problems=[f"checking {filename} failed: the checking process ended "
                                                  f"with code {child.exitcode}"])
            if _resident_mb(child.pid) > memory_mb:
                return Verdict(413, problems=[f"{filename}: checking this spec took more than {memory_mb:.0f} MB of "
                                              "memory; make the grid smaller"])
            if time.monotonic() > deadline:
                return Verdict(413, problems=[f"{filename}: checking this spec took longer than {timeout_s:g} s; "
                                              "make the grid smaller"])
    finally:
        if child.pid is not None:
            child.kill()
            child.join()
        receiver.close()
        temp.unlink(missing_ok=True)
