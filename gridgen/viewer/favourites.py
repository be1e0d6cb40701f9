"""Blueprint `favourites`: starred cells, kept per grid by cell key in the viewer's SQLite file.

JSON API: `GET /api/favourites[?grid=ID]` lists, `POST` adds and `DELETE` removes `{"grid", "key"}`.
`GET /favourites` is the page of every starred image; `GET /favourites.zip[?grid=ID]` downloads the
starred images with a `favourites.json` manifest (grid, key, file, params, A1111 parameters).
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from datetime import datetime
from typing import Any

from flask import Blueprint, jsonify, render_template, request, send_file, url_for

from gridgen.viewer import catalog
from gridgen.viewer.grids import asset_url, grid_href
from gridgen.viewer.security import deny
from gridgen.viewer.state import get_state

blueprint = Blueprint("favourites", __name__)

MAX_KEY = 1024


def _enriched(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    state = get_state()
    result = []
    for item in items:
        cell = catalog.cell_of(state.root, item["grid"], item["key"], state.cache) or {}
        base = url_for("grids.root_grid")
        image, thumb = cell.get("image"), cell.get("thumb") or cell.get("image")
        result.append({
            **item,
            "grid_href": grid_href(item["grid"]),
            "image": base + catalog.grid_url_path(item["grid"], image) if isinstance(image, str) else None,
            "thumb": base + catalog.grid_url_path(item["grid"], thumb) if isinstance(thumb, str) else None,
            "parameters": cell.get("parameters", ""),
        })
    return result


def _target() -> tuple[str, str] | None:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        body = request.args
    grid, key = body.get("grid"), body.get("key")
    if not isinstance(grid, str) or not isinstance(key, str) or not key or len(key) > MAX_KEY:
        return None
    return grid, key


@blueprint.get("/api/favourites")
def api_list():
    grid = request.args.get("grid")
    return jsonify(favourites=_enriched(get_state().db.favourites(grid)))


@blueprint.post("/api/favourites")
def api_add():
    target = _target()
    if target is None:
        return deny(400, 'send JSON {"grid": GRID_ID, "key": CELL_KEY}')
    state = get_state()
    grid, key = target
    if catalog.grid_path(state.root, grid) is None:
        return deny(404, f"no grid {grid!r} under the root")
    if catalog.cell_of(state.root, grid, key, state.cache) is None:
        return deny(404, f"grid {grid!r} has no rendered cell {key!r}")
    added = state.db.add_favourite(grid, key)
    return jsonify(added=added, grid=grid, key=key), 201 if added else 200


@blueprint.delete("/api/favourites")
def api_remove():
    target = _target()
    if target is None:
        return deny(400, 'send JSON {"grid": GRID_ID, "key": CELL_KEY}')
    removed = get_state().db.remove_favourite(*target)
    return jsonify(removed=removed, grid=target[0], key=target[1])


@blueprint.get("/favourites")
def page():
    items = _enriched(get_state().db.favourites())
    return render_template("viewer_favourites.html.j2", favourites=items, page="favourites",
                           css=asset_url("viewer.css"), js=asset_url("viewer.js"))


@blueprint.get("/favourites.zip")
def download():
    state = get_state()
    grid = request.args.get("grid")
    items = state.db.favourites(grid)
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)
    manifest = []
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:
        for item in items:
            folder = catalog.grid_path(state.root, item["grid"])
            cell = catalog.cell_of(state.root, item["grid"], item["key"], state.cache)
            image = cell.get("image") if cell else None
            if folder is None or not isinstance(image, str):
                continue
            try:
                parts = catalog.split_relative(image)
            except catalog.UnsafePath:
                continue
            path = catalog.resolve_inside(state.root, [*catalog.split_relative(item["grid"]), *parts])
            if path is None or not path.is_file() or catalog.grid_folder_of(state.root, path) != folder:
                continue
            name = "/".join(p for p in (item["grid"] or state.root.name, image) if p)
            archive.write(path, name)
            manifest.append({"grid": item["grid"], "key": item["key"], "file": name,
                             "params": cell.get("params", {}), "parameters": cell.get("parameters", "")})
        archive.writestr("favourites.json", json.dumps(manifest, indent=2, default=str))
    spool.seek(0)
    stem = "all" if grid is None else (grid.replace("/", "-") or state.root.name)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return send_file(spool, mimetype="application/zip", as_attachment=True,
                     download_name=f"favourites-{stem}-{stamp}.zip")
