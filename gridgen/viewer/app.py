"""Owns `create_app`, the viewer's Flask app factory: configuration checks, the state object, the
blueprints and the request guards, wired together for one root folder.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from gridgen.errors import GridError
from gridgen.resources import data_dir
from gridgen.viewer import favourites, grids, live, runs, security
from gridgen.viewer.db import DB_NAME, Database
from gridgen.viewer.state import EXTENSION, ViewerState


def create_app(root: Path, *, token: str | None = None, allow_runs: bool = False, models_dir: Path | None = None,
               max_upload_bytes: int = 256 * 1024, start_worker: bool = True) -> Flask:
    """A viewer for every grid under `root`.

    `token`: when set, every request must carry it (Authorization: Bearer, ?token= or the cookie
    set after a ?token= visit). `allow_runs` lets the browser queue specs and needs a token.
    `models_dir`: besides `root`, where the models and images of browser-submitted specs may lie.
    `max_upload_bytes`: the largest spec accepted (larger: 413). `start_worker`: start the thread that
    renders queued runs (tests turn it off to look at the queue).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise GridError(f"{root} is not a folder: pass the folder that holds your grids' output folders")
    if allow_runs and not token:
        raise GridError("runs from the browser need a token: pass --token (any long random string) with --allow-runs")
    if token is not None and not token.strip():
        raise GridError("the token is empty: pass a non-empty --token")
    models = Path(models_dir).expanduser().resolve() if models_dir else None
    if models is not None and not models.is_dir():
        raise GridError(f"models folder {models} is not a folder")
    root = root.resolve()

    app = Flask(__name__, static_folder=None, template_folder=str(data_dir("templates")))
    app.jinja_options = {**app.jinja_options, "autoescape": True}
    # The request-size limit covers a spec of max_upload_bytes plus the form or JSON around it; the
    # spec text itself is checked against max_upload_bytes exactly (runs.py).
    app.config["MAX_CONTENT_LENGTH"] = 2 * max_upload_bytes + 16 * 1024
    state = ViewerState(root=root, token=token, allow_runs=allow_runs, models_dir=models,
                        max_upload_bytes=max_upload_bytes, db=Database(root / DB_NAME))
    app.extensions[EXTENSION] = state

    security.install(app)
    for blueprint in (grids.blueprint, live.blueprint, favourites.blueprint, runs.blueprint):
        app.register_blueprint(blueprint)

    @app.errorhandler(413)
    def _too_large(_error):
        return security.deny(413, f"the request is too large (a spec may have at most {max_upload_bytes} bytes)")

    @app.context_processor
    def _globals():
        return {"allow_runs": state.allow_runs, "root_name": root.name or str(root)}

    state.db.recover()
    for leftover in root.glob(".gridgen-spec-*.yaml"):  # a check cut short when the server was killed
        leftover.unlink(missing_ok=True)
    if allow_runs and start_worker:
        from gridgen.viewer.worker import RunWorker

        state.worker = RunWorker(state)
        state.worker.start()
    return app
