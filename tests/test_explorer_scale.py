"""A large grid in a real browser: only the cells on screen have DOM, and what is shown lines up.

The grid is synthesized (3,600 cells of four axes, one 16 px thumbnail file per colour) and written
by gridgen's explorer writer. With X/Y super-axes the table is 60 x 60 cells; the page must window
it (a few hundred cells in the DOM, spacers for the rest), re-window it as the page scrolls, and the
cell under any point must be the one its row and column labels name. The timing targets themselves
are measured by bench/explorer_scale.py, not asserted here.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from browser import watched_page
from PIL import Image

from gridgen.explorer import write_data, write_page

SHAPE = [("a", 6), ("b", 10), ("c", 6), ("d", 10)]
NESTED = "#x=b&y=d&xs=a&ys=c"


def _thumb(rgb) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), rgb).save(buffer, "WEBP")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale")
    axes = [
        {"id": name, "title": name.upper(), "description": "", "default": None,
         "values": [{"id": f"{name}{i}", "title": f"{name} {i}", "description": "", "skip": False, "show": True,
                     "params": {}} for i in range(size)]}
        for name, size in SHAPE
    ]
    thumbs = [_thumb((40 * i, 200 - 30 * i, 120)) for i in range(6)]
    keys = [[]]
    for axis in axes:
        keys = [k + [v["id"]] for k in keys for v in axis["values"]]
    cells = {}
    for n, coords in enumerate(keys):
        key = "/".join(coords)
        path = out / "thumbs" / f"{key}.webp"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(thumbs[n % 6])
        cells[key] = {"image": f"thumbs/{key}.webp", "thumb": f"thumbs/{key}.webp", "seed": n,
                      "params": {"seed": n, "width": 64, "height": 64}, "time": 0.1, "hash": f"{n:x}",
                      "parameters": f"Seed: {n}"}
    data = {"version": 1, "title": "big", "author": "", "description": "", "stylesheet": "", "format": "png",
            "page": {"x_axis": "b", "y_axis": "d"}, "axes": axes, "base_params": {"width": 64, "height": 64},
            "cells": cells, "progress": {"total": len(cells), "done": len(cells), "skipped": 0, "failed": 0,
                                         "running": False}}
    write_page(out, data)
    write_data(out, data)
    return out


@pytest.fixture
def page(browser):
    with watched_page(browser, 1200, 800) as tab:
        yield tab


POINT_JS = """([x, y]) => {
  const td = document.elementFromPoint(x, y).closest('td.cell');
  const rowLabel = document.elementFromPoint(30, y).closest('th');
  const headers = document.querySelectorAll('thead th.col-label');
  const colLabel = [...headers].find(th => {
    const r = th.getBoundingClientRect();
    return r.left <= x && x < r.right;
  });
  const supers = [...document.querySelectorAll('tbody tr.super-row')].filter(tr => tr.getBoundingClientRect().top < y);
  return {key: td && td.dataset.key, row: rowLabel && rowLabel.innerText.trim(),
          col: colLabel && colLabel.querySelector('.label-title').innerText,
          superRow: supers.length ? supers[supers.length - 1].innerText.trim() : null};
}"""


def settle(page) -> None:
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def check_point(page, x: int, y: int) -> str:
    """The cell under (x, y) is the one named by its row label, column label and super-row."""
    found = page.evaluate(POINT_JS, [x, y])
    a, b, c, d = found["key"].split("/")
    assert found["row"] == f"d {d[1:]}", found
    assert found["col"] == f"b {b[1:]}", found
    if found["superRow"] is not None:
        assert found["superRow"] == f"c {c[1:]}", found
    return found["key"]


def test_a_large_table_builds_dom_only_for_what_is_on_screen(page, grid):
    page.goto((grid / "index.html").as_uri() + NESTED)
    page.wait_for_selector("table.grid.windowed")
    assert page.evaluate("performance.getEntriesByName('gridgen:interactive').length") == 1
    first = page.locator("td.cell").count()
    assert 0 < first < 600  # of 3,600
    width = page.evaluate("document.querySelector('table.grid').getBoundingClientRect().width")
    assert width > 60 * 128  # the table has the full size, so the page scrolls over every cell
    assert check_point(page, 400, 500).startswith("a0/")
    # scroll to the middle: the window follows, and cells line up with their labels
    page.evaluate("window.scrollTo(4000, 4500)")
    settle(page)
    assert page.locator("td.cell").count() < 600
    assert page.locator('td.cell[data-row="0"][data-col="0"]').count() == 0
    key = check_point(page, 600, 400)
    assert not key.startswith("a0/") and not key.endswith("/d0")
    check_point(page, 1000, 700)
    page.screenshot(path="/tmp/explorer-scale.png")
    # the far corner
    page.evaluate("window.scrollTo(1e6, 1e6)")
    settle(page)
    assert check_point(page, 1100, 700) == "a5/b9/c5/d9"
    # swap the axes: still windowed, still aligned
    page.evaluate("window.scrollTo(2500, 3000)")
    page.select_option("#pick-x", "d")
    settle(page)
    assert page.locator("td.cell").count() < 600
    found = page.evaluate(POINT_JS, [700, 500])
    a, b, c, d = found["key"].split("/")
    assert found["row"] == f"b {b[1:]}" and found["col"] == f"d {d[1:]}"
    # the popup walks past the rendered window with the arrow keys
    page.evaluate("window.scrollTo(0, 0)")
    settle(page)
    page.click('td.cell[data-row="0"][data-col="0"] a')
    for _ in range(40):
        page.keyboard.press("ArrowRight")
    assert page.get_attribute("#popup", "data-key") == "a4/b0/c0/d0"
