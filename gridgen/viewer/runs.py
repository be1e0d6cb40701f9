"""Blueprint `runs`: queueing grid specs from the browser, only when the app allows runs.

`GET /runs` is the page (paste or upload a spec, see the queue). The JSON API:
`GET /api/runs` lists the queue, `GET /api/runs/ID` shows one run with its spec,
`POST /api/runs` validates and queues a spec (JSON `{"spec", "name"?, "filename"?}` or a form with
`spec` text or a `file` upload, and `name`), `POST /api/runs/ID/cancel` cancels a queued or running
run. A spec larger than the configured limit gets 413, and so does one that asks for more than a cap
allows (values per axis, cells, aliases) or whose check, run in a child process, passes its time or
memory limit; one that does not validate gets 422 with every problem as `FILE:LINE:COL: message`; a
name already queued or already a folder under the root, 409.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template, request

from gridgen.viewer import catalog, db, sandbox, specs
from gridgen.viewer.grids import asset_url, grid_href
from gridgen.viewer.security import deny
from gridgen.viewer.state import get_state

blueprint = Blueprint("runs", __name__)


@blueprint.before_request
def _runs_allowed():
    if not get_state().allow_runs:
        return deny(403, "runs from the browser are off: start `gridgen serve` with --allow-runs and --token")
    return None


def _public(run: dict) -> dict:
    state = get_state()
    out = {k: v for k, v in run.items() if k != "spec"}
    folder = catalog.grid_path(state.root, run["name"])
    out["href"] = grid_href(run["name"]) if folder is not None else None
    return out


@blueprint.get("/runs")
def page():
    return render_template("viewer_runs.html.j2", page="runs", max_upload=get_state().max_upload_bytes,
                           css=asset_url("viewer.css"), js=asset_url("viewer.js"))


@blueprint.get("/api/runs")
def api_list():
    return jsonify(runs=[_public(run) for run in get_state().db.runs()])


@blueprint.get("/api/runs/<int:run_id>")
def api_show(run_id: int):
    run = get_state().db.run(run_id, with_spec=True)
    if run is None:
        return deny(404, f"no run {run_id}")
    return jsonify(run={**_public(run), "spec": run["spec"]})


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _submitted() -> tuple[str, str, str | None]:
    """(spec text, file name, run name) from a JSON body or a form; raises _Refused."""
    state = get_state()
    limit = state.max_upload_bytes
    if request.is_json:
        body = request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        text, filename, name = body.get("spec"), str(body.get("filename") or "spec.yaml"), body.get("name")
    else:
        upload = request.files.get("file")
        filename, name = str(request.form.get("filename") or "spec.yaml"), request.form.get("name")
        text = request.form.get("spec")
        if upload is not None and upload.filename:
            filename = upload.filename.replace("\\", "/").rsplit("/", 1)[-1]
            raw = upload.stream.read(limit + 1)
            if len(raw) > limit:
                raise _Refused(413, f"the spec is larger than {limit} bytes")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused(422, f"{filename}: the file is not UTF-8 text; save it as UTF-8") from None
    if isinstance(text, str) and len(text.encode("utf-8", "replace")) > limit:
        raise _Refused(413, f"the spec is larger than {limit} bytes")
    if not isinstance(text, str) or not text.strip():
        raise _Refused(400, 'send a spec: paste it, upload a file, or POST JSON {"spec": TEXT}')
    return text, filename, name if isinstance(name, str) else None


@blueprint.post("/api/runs")
def api_submit():
    state = get_state()
    try:
        text, filename, name = _submitted()
        name = specs.run_name(name, filename)
    except _Refused as err:
        if err.status == 422:
            return jsonify(problems=[str(err)]), 422
        return deny(err.status, str(err))
    except specs.SubmissionError as err:
        return jsonify(problems=err.problems), 422
    if name in state.db.active_names():
        return deny(409, f"a run named {name!r} is already queued or rendering; pick another name")
    if (state.root / name).exists() or (state.root / name).is_symlink():
        return deny(409, f"{name!r} already exists under the root; pick another name")
    try:
        verdict = sandbox.check(text, filename, name, state.root, state.models_dir, timeout_s=state.check_timeout_s,
                                memory_mb=state.check_memory_mb)
    except specs.SubmissionError as err:
        return jsonify(problems=err.problems), 422
    if verdict.status != 201:
        return jsonify(problems=verdict.problems), verdict.status
    run = state.db.add_run(name, filename, text)
    if state.worker is not None:
        state.worker.wake()
    return jsonify(run=_public(run), warnings=verdict.warnings, cells=verdict.cells), 201


@blueprint.post("/api/runs/<int:run_id>/cancel")
def api_cancel(run_id: int):
    state = get_state()
    status = state.db.cancel(run_id)
    if status is None:
        run = state.db.run(run_id)
        if run is None:
            return deny(404, f"no run {run_id}")
        return deny(409, f"run {run_id} has already finished ({run['status']})")
    if status == db.CANCELLING and state.worker is not None:
        state.worker.cancel(run_id)
    return jsonify(run=_public(state.db.run(run_id)))
