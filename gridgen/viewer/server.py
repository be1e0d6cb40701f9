"""Owns `gridgen serve`: the binding rules (a non-loopback address needs a token; runs from the
browser need a token) and the blocking HTTP server (werkzeug's threaded server, one thread per
request, so event streams do not hold up the rest).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from gridgen.errors import GridError

LOOPBACK_NAMES = {"localhost"}


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(root: Path, host: str, token: str | None, allow_runs: bool) -> None:
    """Raise GridError (the CLI exits 2) for a setup the viewer refuses."""
    if not Path(root).is_dir():
        raise GridError(f"{root} is not a folder: pass the folder that holds your grids' output folders")
    if token is not None and not token.strip():
        raise GridError("the token is empty: pass a non-empty --token")
    if not is_loopback(host) and not token:
        raise GridError(f"binding {host} exposes the viewer beyond this machine: pass --token (any long random "
                        "string) so every request must carry it, or bind 127.0.0.1")
    if allow_runs and not token:
        raise GridError("--allow-runs lets the browser start renders: pass --token as well")


def serve(root: Path, host: str = "127.0.0.1", port: int = 7860, token: str | None = None,
          allow_runs: bool = False, models_dir: Path | None = None) -> int:
    """Serve until Ctrl-C; returns the exit code. The token defaults to $GRIDGEN_TOKEN (a token on the
    command line is visible to other users of the machine)."""
    if token is None:
        token = os.environ.get("GRIDGEN_TOKEN") or None
    check_bind(root, host, token, allow_runs)
    try:
        from werkzeug.serving import make_server

        from gridgen.viewer.app import create_app
        from gridgen.viewer.state import get_state
    except ImportError as err:
        raise GridError(f"`gridgen serve` needs Flask ({err}): pip install flask") from None
    app = create_app(Path(root), token=token, allow_runs=allow_runs, models_dir=models_dir)
    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as err:
        get_state(app).shutdown()
        raise GridError(f"cannot listen on {host}:{port}: {err.strerror or err}; pick another --port") from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.port}/" + (f"?token={token}" if token else "")
    print(f"serving the grids under {Path(root).resolve()} at {url}", file=sys.stderr)
    if allow_runs:
        print("runs from the browser are on: open /runs", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nstopping (a run in progress resumes at the next start)...", file=sys.stderr)
    finally:
        server.server_close()
        get_state(app).shutdown()
    return 0
