"""Blueprint `grids`: the index of every grid under the root, each grid's explorer page and files,
and the viewer's own script and stylesheet.

A grid's page is its own index.html (the static explorer, as `gridgen run` wrote it) with the
viewer's live script added before `</body>`; every other file of the grid (data.js, static/,
images/, thumbs/) is served as it is on disk. Only files inside a grid folder are served, never a
hidden one, never one whose resolved path leaves the root.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flask import Blueprint, Response, jsonify, redirect, render_template, request, send_file, url_for
from jinja2.utils import htmlsafe_json_dumps

from gridgen.resources import data_dir
from gridgen.viewer import catalog
from gridgen.viewer.security import deny
from gridgen.viewer.state import get_state

blueprint = Blueprint("grids", __name__)

VIEWER_ASSETS = ("viewer.js", "viewer.css")
_NO_STORE = {"Cache-Control": "no-store"}


def asset_url(name: str) -> str:
    """The URL of a viewer asset, versioned by its content so a browser never keeps a stale copy."""
    version = hashlib.sha1((data_dir("static") / name).read_bytes()).hexdigest()[:12]
    return url_for("grids.asset", name=name, v=version)


def grid_href(gid: str) -> str:
    """The URL of a grid's page (always with its trailing slash, so relative links resolve in it)."""
    return url_for("grids.root_grid") if gid == "" else url_for("grids.grid_file", rel=gid) + "/"


def summaries() -> list[dict]:
    state = get_state()
    found = (catalog.summary(state.root, gid, state.cache) for gid in catalog.find_grids(state.root))
    result = [s for s in found if s is not None]
    for item in result:
        item["href"] = grid_href(item["id"])
        item["thumbs"] = [{**t, "href": url_for("grids.root_grid") + t["url"]} for t in item["thumbs"]]
    return sorted(result, key=lambda s: -s["modified"])


@blueprint.get("/")
def index():
    return render_template("viewer_index.html.j2", grids=summaries(), page="index",
                           css=asset_url("viewer.css"), js=asset_url("viewer.js"))


@blueprint.get("/api/grids")
def api_grids():
    return jsonify(grids=summaries())


@blueprint.get("/favicon.ico")
def favicon():
    return Response(status=204)


@blueprint.get("/_viewer/<name>")
def asset(name: str):
    if name not in VIEWER_ASSETS:
        return deny(404, "not found")
    return send_file(data_dir("static") / name, max_age=3600 if request.args.get("v") else 0)


@blueprint.get("/g/", defaults={"rel": ""}, endpoint="root_grid")
@blueprint.get("/g/<path:rel>")
def grid_file(rel: str):
    state = get_state()
    trailing = rel.endswith("/") or rel == ""
    try:
        parts = catalog.split_relative(rel.rstrip("/"))
    except catalog.UnsafePath as err:
        return deny(400, str(err))
    if catalog.is_hidden(parts):
        return deny(404, "not found")
    target = catalog.resolve_inside(state.root, parts)
    if target is None:
        return deny(404, "not found")
    folder = catalog.grid_folder_of(state.root, target)
    if folder is None:
        return deny(404, "not found: only the files of a grid folder (one holding grid.json) are served")
    if target.is_dir():
        if target != folder:
            return deny(404, "not found")
        if not trailing:
            return redirect(grid_href(catalog.grid_id(state.root, folder)), code=308)
        return _page(folder)
    if target == folder / "index.html":
        return _page(folder)
    response = send_file(target, conditional=True, max_age=0)
    if target.name in ("data.js", "grid.json", "journal.jsonl"):
        response.headers.update(_NO_STORE)
    return response


def _page(folder: Path) -> Response:
    """The grid's own explorer page with the viewer's live script and stylesheet added."""
    state = get_state()
    gid = catalog.grid_id(state.root, folder)
    try:
        html = (folder / "index.html").read_text(encoding="utf-8")
    except OSError:
        return deny(404, f"{gid or 'this grid'} has no index.html yet: run `gridgen html {folder}` to write it")
    config = {
        "grid": gid,
        "events": url_for("live.events", gid=gid) if gid else url_for("live.root_events"),
        "favourites": url_for("favourites.api_list", grid=gid),
        "favouritesApi": url_for("favourites.api_list"),
        "zip": url_for("favourites.download", grid=gid),
        "index": url_for("grids.index"),
    }
    extra = (
        f'<link rel="stylesheet" href="{asset_url("viewer.css")}">\n'
        f'<script id="gridgen-viewer" type="application/json">{htmlsafe_json_dumps(config)}</script>\n'
        f'<script src="{asset_url("viewer.js")}"></script>\n'
    )
    at = html.lower().rfind("</body>")
    html = html[:at] + extra + html[at:] if at >= 0 else html + extra
    return Response(html, mimetype="text/html", headers=_NO_STORE)
