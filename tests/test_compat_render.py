"""End to end: the issue's peer-style axes render on the embedded model, and `gridgen validate --json`."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageChops

from gridgen.cli import main
from gridgen.spec.report import CELL_LIST_LIMIT
from tests.spec_helpers import SHARED_FIXTURES, write_spec

BASE = "grid:\n  params: {model: gridgen-tiny, steps: 2, width: 32, height: 32, prompt: a cat, sampler: Euler}\naxes:\n"


def _journal(out):
    return {entry["key"]: entry for entry in map(json.loads, (out / "journal.jsonl").read_text().splitlines())}


@pytest.mark.parametrize(("axis", "expected"), [
    ("prompt: 日本, 中国", {"日本": {"prompt": "日本"}, "中国": {"prompt": "中国"}}),
    ("seed: 1, 1, 2", {"1": {"seed": 1}, "1__2": {"seed": 1}, "2": {"seed": 2}}),
    ("steps: 1-10 [5]", {str(n): {"steps": n} for n in (1, 3, 5, 7, 10)}),
    ("steps: 1, 3, ..., 10", {str(n): {"steps": n} for n in (1, 3, 5, 7, 10)}),
    ("promptreplace: cat, dog, waffle", {w: {"prompt": f"a {w}"} for w in ("cat", "dog", "waffle")}),
])
def test_peer_style_axes_render(tmp_path, capsys, axis, expected):
    spec = write_spec(tmp_path, BASE + "  " + axis + "\n")
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    journal = _journal(out)
    assert set(journal) == set(expected)
    for key, params in expected.items():
        assert {name: journal[key]["params"][name] for name in params} == params
        assert (out / journal[key]["file"]).is_file() and journal[key]["file"] == f"images/{key}.png"
    titles = [v["title"] for v in json.loads((out / "grid.json").read_text())["axes"][0]["values"]]
    assert len(titles) == len(expected)
    if "1__2" in journal:  # a repeated value renders: the same seed gives the same image
        same = ImageChops.difference(Image.open(out / journal["1"]["file"]).convert("RGB"),
                                     Image.open(out / journal["1__2"]["file"]).convert("RGB"))
        assert same.getbbox() is None and titles == ["1", "1", "2"]


def _validate_json(capsys, *args):
    code = main(["validate", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_validate_json_on_short_example(capsys):
    path = SHARED_FIXTURES / "short_example.yml"
    if not path.exists():
        pytest.skip(f"the shared Infinity Grid fixture {path} is absent")
    code, report = _validate_json(capsys, str(path))
    assert code == 0 and report["ok"] and report["errors"] == []
    assert (report["cell_count"], report["render_count"]) == (720, 540)
    assert len(report["cells"]) == 720 and sum(not c["skip"] for c in report["cells"]) == 540
    steps = next(axis for axis in report["axes"] if axis["id"] == "steps")
    assert steps["default"] == "20"
    secret = next(value for value in steps["values"] if value["id"] == "secret_option")
    assert secret == {"id": "secret_option", "title": "Secret Option", "description": "The hidden secret option!",
                      "params": {"steps": 150}, "skip": True, "show": False}
    assert report["params"]["out_width"] == 256


def test_validate_json_counts_a_huge_grid_and_locates_a_missing_model(tmp_path, capsys):
    path = write_spec(tmp_path, """
        grid: {params: {width: 32, height: 32}}
        axes:
          seed: 1-150
          steps: 1-100
          model: gridgen-tiny || no-such-model.safetensors
    """)
    code, report = _validate_json(capsys, str(path))
    assert code == 2 and not report["ok"]
    assert report["cell_count"] == 30_000 > CELL_LIST_LIMIT and report["cells"] is None  # counted, not listed
    assert report["render_count"] == 30_000 and [len(a["values"]) for a in report["axes"]] == [150, 100, 2]
    (missing,) = [e for e in report["errors"] if "no-such-model.safetensors" in e["message"]]
    assert (missing["file"], missing["line"], missing["column"]) == (str(path), 5, 10)


def test_validate_json_reports_a_broken_spec_and_warnings(tmp_path, capsys):
    bad = write_spec(tmp_path, "axes:\n  steps: 0, 5\n  restore faces: true, false\n")
    code, report = _validate_json(capsys, str(bad))
    assert code == 2 and report["axes"] == [] and report["cells"] is None
    assert report["errors"] == [{"message": "steps must be >= 1, <= 1000, got 0", "file": str(bad), "line": 2,
                                 "column": 10}]
    assert "restore" in report["warnings"][0]["message"]
    code, report = _validate_json(capsys, str(bad), "--backend", "nope")
    assert code == 2 and "nope" in report["errors"][0]["message"] and report["errors"][0]["line"] is None
    good = write_spec(tmp_path, "axes:\n  prompt: 日本, кот\n  seed: 1, 1\n", name="good.yaml")
    code, report = _validate_json(capsys, str(good))
    assert code == 0 and [c["key"] for c in report["cells"]] == ["日本/1", "日本/1__2", "кот/1", "кот/1__2"]


def test_non_english_grid_is_served_by_the_viewer(tmp_path, capsys):
    from urllib.parse import quote

    from gridgen.viewer import create_app
    from gridgen.viewer.state import get_state

    root = tmp_path / "root"
    spec = write_spec(tmp_path, BASE + "  prompt: 日本, кот, Ελληνικά\n")
    assert main(["run", str(spec), "--out", str(root / "g"), "--quiet"]) == 0, capsys.readouterr().err
    app = create_app(root, start_worker=False)
    try:
        client = app.test_client()
        for value_id in ("日本", "кот", "ελληνικά"):
            response = client.get("/g/g/images/" + quote(value_id) + ".png")
            assert response.status_code == 200 and response.data[:4] == b"\x89PNG"
        data = client.get("/g/g/data.js").get_data(as_text=True)
        assert all(title in data or title.encode("unicode_escape").decode() in data
                   for title in ("日本", "кот", "Ελληνικά"))
    finally:
        get_state(app).shutdown()
