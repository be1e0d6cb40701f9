"""The explorer writer: data.js/grid.json, index.html and its static files, and rebuild()."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gridgen.errors import GridError
from gridgen.explorer import ASSETS, rebuild, write_data, write_page
from gridgen.resources import data_dir

DATA_JS = re.compile(r"\Awindow\.GRIDGEN = (.*);\n\Z", re.DOTALL)


def grid_data(cells: int = 2) -> dict:
    """A small, valid data object: one axis with `cells` values, every cell finished."""
    values = [
        {"id": f"v{i}", "title": f"V{i}", "description": "", "skip": False, "show": True, "params": {"steps": i}}
        for i in range(cells)
    ]
    return {
        "version": 1,
        "title": "<Cats & Dogs>",
        "author": "Ann <ann@example.com>",
        "description": '<p>Hello <b class="x">world</b></p>',
        "stylesheet": "h1 > b { color: red; }",
        "format": "png",
        "page": {
            "show_descriptions": True,
            "autoscale": False,
            "sticky": False,
            "sticky_labels": True,
            "x_axis": "steps",
            "y_axis": None,
            "x_super_axis": None,
            "y_super_axis": None,
        },
        "axes": [{"id": "steps", "title": "Steps", "description": "", "default": None, "values": values}],
        "base_params": {"prompt": "a cat \u2028 \u00e9t\u00e9 </script>"},
        "cells": {
            f"v{i}": {
                "image": f"images/v{i}.png",
                "thumb": f"thumbs/v{i}.webp",
                "seed": i,
                "params": {"steps": i},
                "time": 0.5,
                "hash": "0" * 40,
                "parameters": f"a cat\nSteps: {i}",
            }
            for i in range(cells)
        },
        "progress": {
            "total": cells,
            "done": cells,
            "skipped": 0,
            "failed": 0,
            "running": False,
            "updated": "2024-01-01T00:00:00Z",
        },
    }


def read_data_js(path: Path) -> dict:
    match = DATA_JS.match(path.read_text(encoding="utf-8"))
    assert match, "data.js must be exactly `window.GRIDGEN = <json>;`"
    return json.loads(match.group(1))


def test_write_data_writes_data_js_and_grid_json(tmp_path):
    data = grid_data()
    write_data(tmp_path, data)
    assert read_data_js(tmp_path / "data.js") == data
    assert json.loads((tmp_path / "grid.json").read_text(encoding="utf-8")) == data


def test_write_data_is_compact_and_leaves_no_temp_files(tmp_path):
    data = grid_data()
    write_data(tmp_path, data)
    text = (tmp_path / "grid.json").read_text(encoding="utf-8")
    assert text == json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.js", "grid.json"]


def test_write_data_handles_ten_thousand_cells(tmp_path):
    data = grid_data(10_000)
    write_data(tmp_path, data)
    assert len(read_data_js(tmp_path / "data.js")["cells"]) == 10_000


def test_write_page_writes_index_and_static_files(tmp_path):
    write_page(tmp_path, grid_data())
    for name in ASSETS:
        assert (tmp_path / "static" / name).read_bytes() == (data_dir("static") / name).read_bytes()
        assert re.search(rf'"static/{re.escape(name)}\?v=[0-9a-f]+"', (tmp_path / "index.html").read_text())
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert '<script src="data.js"></script>' in html
    assert re.search(r'<script src="static/explorer\.js\?v=[0-9a-f]+"></script>', html)
    assert re.search(r'<link rel="stylesheet" href="static/explorer\.css\?v=[0-9a-f]+">', html)


def test_write_page_escapes_title_and_author_but_not_description(tmp_path):
    write_page(tmp_path, grid_data())
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<title>&lt;Cats &amp; Dogs&gt;</title>" in html
    assert "<h1>&lt;Cats &amp; Dogs&gt;</h1>" in html
    assert "Ann &lt;ann@example.com&gt;" in html
    assert "<Cats" not in html and "<ann@" not in html
    assert '<p>Hello <b class="x">world</b></p>' in html
    assert "<style>\nh1 > b { color: red; }\n</style>" in html


def test_stylesheet_cannot_close_its_style_tag(tmp_path):
    data = grid_data()
    data["stylesheet"] = "p { color: red } </STYLE><script>alert(1)</script>"
    write_page(tmp_path, data)
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert html.lower().count("</style>") == 1
    assert "<\\/STYLE>" in html


def test_page_references_only_local_files(tmp_path):
    write_page(tmp_path, grid_data())
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assets = [(tmp_path / "static" / name).read_text(encoding="utf-8") for name in ASSETS]
    for text in (html, *assets):
        assert "http:" not in text and "https:" not in text
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not ref.startswith(("/", "//")) and ":" not in ref, ref


def test_write_page_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    write_page(out, grid_data())
    assert (out / "index.html").is_file()


def test_write_page_defaults_missing_fields(tmp_path):
    write_page(tmp_path, {"axes": [], "cells": {}})
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<title>gridgen grid</title>" in html
    assert "<style>" not in html


def test_rebuild_regenerates_everything_from_grid_json(tmp_path):
    data = grid_data()
    (tmp_path / "grid.json").write_text(json.dumps(data), encoding="utf-8")
    rebuild(tmp_path)
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "static" / "explorer.js").is_file()
    assert read_data_js(tmp_path / "data.js") == data


def test_rebuild_without_grid_json_says_what_is_wrong(tmp_path):
    with pytest.raises(GridError, match=r"grid\.json not found.*gridgen run"):
        rebuild(tmp_path)


def test_rebuild_of_a_missing_folder_says_so(tmp_path):
    with pytest.raises(GridError, match="is not a folder"):
        rebuild(tmp_path / "nope")


def test_rebuild_with_broken_grid_json_names_the_position(tmp_path):
    (tmp_path / "grid.json").write_text('{"axes": [\n  1,\n', encoding="utf-8")
    with pytest.raises(GridError, match=r"grid\.json:3:1: not valid JSON"):
        rebuild(tmp_path)


def test_rebuild_rejects_json_that_is_not_grid_data(tmp_path):
    (tmp_path / "grid.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(GridError, match="does not hold gridgen grid data"):
        rebuild(tmp_path)
