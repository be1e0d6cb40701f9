"""Writes a grid's explorer: the page (index.html + static/) and its data (data.js + grid.json).

The page is static and works opened straight from disk: index.html loads data.js, which sets
`window.GRIDGEN = {...};`, and the vendored static/explorer.js renders the grid from it. While a run
is in progress the store calls `write_data` as cells land; an open page re-loads data.js and fills
them in. `rebuild` regenerates everything from grid.json (`gridgen html OUTDIR`).

Every file is written atomically, so a page polling data.js never reads half a file.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from gridgen.errors import GridError
from gridgen.fsutil import atomic_write_bytes, atomic_write_text
from gridgen.resources import data_dir

TEMPLATE = "explorer.html.j2"
ASSETS = ("explorer.scores.js", "explorer.js", "explorer.codecs.js", "explorer.tools.js", "explorer.insight.js",
          "explorer.css")
_STYLE_END = re.compile(r"</(style)", re.IGNORECASE)


def to_json(data: dict[str, Any]) -> str:
    """The compact JSON text shared by data.js and grid.json."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), check_circular=False)


def write_data(out_dir: Path, data: dict[str, Any]) -> None:
    """Write `out_dir/grid.json` and `out_dir/data.js` (`window.GRIDGEN = <json>;`)."""
    out_dir = Path(out_dir)
    text = to_json(data)
    atomic_write_text(out_dir / "grid.json", text)
    atomic_write_text(out_dir / "data.js", f"window.GRIDGEN = {text};\n")


def write_page(out_dir: Path, data: dict[str, Any]) -> None:
    """Render `out_dir/index.html` and copy the page's script and stylesheet to `out_dir/static/`."""
    out_dir = Path(out_dir)
    static = data_dir("static")
    assets = {name: (static / name).read_bytes() for name in ASSETS}
    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=str(data.get("title") or "gridgen grid"),
            author=str(data.get("author") or ""),
            # The description and stylesheet come from the spec's author and are trusted as written.
            description=Markup(data.get("description") or ""),
            stylesheet=Markup(_STYLE_END.sub(r"<\\/\1", data.get("stylesheet") or "")),
            versions={name: hashlib.sha1(content).hexdigest()[:12] for name, content in assets.items()},
        )
    )
    for name, content in assets.items():
        atomic_write_bytes(out_dir / "static" / name, content)
    atomic_write_text(out_dir / "index.html", html)


def rebuild(out_dir: Path) -> None:
    """Regenerate index.html, static/ and data.js of an output folder from its grid.json."""
    out_dir = Path(out_dir)
    data = read_grid_json(out_dir)
    write_page(out_dir, data)
    write_data(out_dir, data)


def read_grid_json(out_dir: Path) -> dict[str, Any]:
    """The grid data of an output folder (its grid.json); a GridError says what is wrong with it."""
    out_dir = Path(out_dir)
    path = out_dir / "grid.json"
    if not out_dir.is_dir():
        raise GridError(f"{out_dir} is not a folder: pass the output folder of a grid (e.g. out/<grid>)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GridError(
            f"{path} not found: {out_dir} is not a gridgen output folder, or its run has not started "
            "(run `gridgen run SPEC` to create it)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GridError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GridError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); "
            "run the grid again with `gridgen run SPEC` to rewrite it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("axes"), list):
        raise GridError(f"{path} does not hold gridgen grid data (expected an object with an 'axes' list)")
    return data


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
