"""The explorer page in a real browser: Debian's Chromium driven by Playwright, opened from file://.

The fixture synthesizes a grid of three axes (sampler x cfg x seed; one cfg value hidden by default,
one seed value skipped, one cell still pending while the run is "running") with solid-colour PNG
images and WebP thumbnails, written through write_data/write_page exactly as a run writes them.
Every test also checks that the page logged no error and requested nothing but file:// URLs.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from gridgen.explorer import write_data, write_page

SAMPLERS = [("euler", "Euler a"), ("ddim", "DDIM"), ("dpm", "DPM++ 2M")]
CFGS = ["5", "7", "9", "12"]  # 12 has show: false
SEEDS = ["1", "2", "3"]  # 3 has skip: true
PENDING = "dpm/9/1"
SCREENSHOT = Path("/tmp/explorer.png")


def _axes() -> list[dict]:
    def value(vid, title, params, description="", skip=False, show=True):
        return {"id": vid, "title": title, "description": description, "skip": skip, "show": show, "params": params}

    return [
        {
            "id": "sampler",
            "title": "Sampler",
            "description": "The <i>sampling</i> method.",
            "default": None,
            "values": [value(vid, title, {"sampler": title}, f"<b>{title}</b> sampler") for vid, title in SAMPLERS],
        },
        {
            "id": "cfg",
            "title": "CFG scale",
            "description": "",
            "default": None,
            "values": [value(c, c, {"cfg_scale": float(c)}, show=c != "12") for c in CFGS],
        },
        {
            "id": "seed",
            "title": "Seed",
            "description": "Noise seed.",
            "default": None,
            "values": [value(s, s, {"seed": int(s)}, skip=s == "3") for s in SEEDS],
        },
    ]


def _picture(key: str, size: int, fmt: str) -> bytes:
    sampler, cfg, seed = key.split("/")
    hue = [vid for vid, _ in SAMPLERS].index(sampler) / len(SAMPLERS)
    light = 0.3 + 0.12 * CFGS.index(cfg) + 0.05 * SEEDS.index(seed)
    rgb = tuple(round(255 * c) for c in colorsys.hls_to_rgb(hue, light, 0.6))
    image = Image.new("RGB", (size, size), rgb)
    ImageDraw.Draw(image).text((4, 4), key, fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _cell(key: str, out: Path) -> dict:
    sampler, cfg, seed = key.split("/")
    sampler_title = dict(SAMPLERS)[sampler]
    image, thumb = out / f"images/{key}.png", out / f"thumbs/{key}.webp"
    for path, size, fmt in ((image, 128, "PNG"), (thumb, 64, "WEBP")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_picture(key, size, fmt))
    params = {
        "prompt": "a lighthouse at dusk",
        "steps": 20,
        "sampler": sampler_title,
        "cfg_scale": float(cfg),
        "seed": int(seed),
        "width": 128,
        "height": 128,
    }
    return {
        "image": f"images/{key}.png",
        "thumb": f"thumbs/{key}.webp",
        "seed": int(seed),
        "params": params,
        "time": 1.25,
        "hash": hashlib.sha1(key.encode()).hexdigest(),
        "parameters": f"a lighthouse at dusk\nSteps: 20, Sampler: {sampler_title}, CFG scale: {cfg}, "
        f"Seed: {seed}, Size: 128x128",
    }


def build_grid(out: Path) -> dict:
    """Write a synthesized grid to `out` and return its data object."""
    keys = [f"{s}/{c}/{d}" for s, _ in SAMPLERS for c in CFGS for d in SEEDS]
    rendered = [k for k in keys if not k.endswith("/3") and k != PENDING]
    data = {
        "version": 1,
        "title": "Samplers <vs> CFG",
        "author": "Test Author",
        "description": "<p>A <em>synthesized</em> grid for the browser tests.</p>",
        "stylesheet": "h1 { letter-spacing: 1px; }",
        "format": "png",
        "page": {
            "show_descriptions": True,
            "autoscale": False,
            "sticky": False,
            "sticky_labels": True,
            "x_axis": "sampler",
            "y_axis": "cfg",
            "x_super_axis": None,
            "y_super_axis": None,
        },
        "axes": _axes(),
        "base_params": {"prompt": "a lighthouse at dusk", "steps": 20, "width": 128, "height": 128},
        "cells": {key: _cell(key, out) for key in rendered},
        "progress": {
            "total": len(keys),
            "done": len(rendered),
            "skipped": len(keys) // 3,
            "failed": 0,
            "running": True,
            "updated": "2024-05-01T12:00:00Z",
        },
    }
    write_page(out, data)
    write_data(out, data)
    return data


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grid")
    build_grid(out)
    return out


@pytest.fixture
def page(browser):
    """A fresh page; after the test, asserts no console error and no request off the machine."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(5000)
    tab = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert errors == []
    assert requests, "the request recorder saw nothing"
    assert [url for url in requests if not url.startswith("file://")] == []


def open_grid(page, out: Path, hash_: str = "") -> None:
    page.goto((out / "index.html").as_uri() + hash_)
    page.wait_for_selector("table.grid")


def col_labels(page) -> list[str]:
    return page.locator("thead tr:last-child th.col-label .label-title").all_inner_texts()


def row_labels(page) -> list[str]:
    return page.locator("tbody th.row-label .label-title").all_inner_texts()


def thumb(page, row: int, col: int) -> str:
    return page.get_attribute(f'td[data-row="{row}"][data-col="{col}"] img', "src")


def shown_keys(page) -> list[str]:
    return page.eval_on_selector_all("td.cell", "tds => tds.map(td => td.dataset.key)")


def test_default_view(page, grid):
    open_grid(page, grid)
    assert page.title() == "Samplers <vs> CFG"
    assert page.inner_text("h1") == "Samplers <vs> CFG"
    assert page.inner_text(".author") == "by Test Author"
    assert page.inner_text(".grid-description em") == "synthesized"
    assert page.eval_on_selector("h1", "h => getComputedStyle(h).letterSpacing") == "1px"
    assert page.input_value("#pick-x") == "sampler" and page.input_value("#pick-y") == "cfg"
    assert col_labels(page) == ["Euler a", "DDIM", "DPM++ 2M"]
    assert row_labels(page) == ["5", "7", "9"]  # 12 is hidden (show: false)
    assert page.locator("td.cell").count() == 9  # no DOM for cells that are not shown
    assert thumb(page, 1, 2) == "thumbs/dpm/7/1.webp"
    assert page.get_attribute('td[data-key="euler/5/1"] img', "loading") == "lazy"
    assert page.inner_text("thead .col-label .desc b >> nth=1") == "DDIM"
    assert page.locator('.axis-tabs[data-axis="seed"] [aria-selected="true"]').inner_text() == "1"
    assert page.locator(".axis-tabs").count() == 1
    assert "23 / 36 rendered" in page.inner_text("#progress")
    # wait for the thumbnails, then save what the page looks like in its 4-D layout
    page.select_option("#pick-xs", "seed")
    page.check("#opt-scale")
    page.wait_for_function("[...document.images].every(img => img.complete && img.naturalWidth)")
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_missing_page_axes_fall_back_to_the_first_free_axes(page, tmp_path):
    data = build_grid(tmp_path)
    data["page"].update(x_axis=None, y_axis=None, x_super_axis="sampler")
    write_data(tmp_path, data)
    open_grid(page, tmp_path)
    assert [page.input_value(f"#pick-{role}") for role in ("x", "y", "xs", "ys")] == ["cfg", "seed", "sampler", ""]
    assert page.locator(".axis-tabs").count() == 0
    assert page.locator("td.cell").count() == 27


def test_switching_axes_changes_the_cells(page, grid):
    open_grid(page, grid)
    page.select_option("#pick-x", "cfg")  # swaps: sampler moves to Y
    assert page.input_value("#pick-y") == "sampler"
    assert col_labels(page) == ["5", "7", "9"]
    assert row_labels(page) == ["Euler a", "DDIM", "DPM++ 2M"]
    assert thumb(page, 2, 0) == "thumbs/dpm/5/1.webp"
    assert thumb(page, 0, 1) == "thumbs/euler/7/1.webp"
    page.select_option("#pick-y", "seed")  # sampler is now fixed by its tabs
    assert row_labels(page) == ["1", "2", "3"]
    assert page.locator(".axis-tabs").evaluate_all("rows => rows.map(r => r.dataset.axis)") == ["sampler"]
    assert thumb(page, 1, 2) == "thumbs/euler/9/2.webp"
    page.select_option("#pick-xs", "sampler")  # 4-D: sampler splits the columns into blocks
    assert page.locator("thead .super-label .label-title").all_inner_texts() == ["Euler a", "DDIM", "DPM++ 2M"]
    assert page.locator("td.cell").count() == 27
    assert thumb(page, 0, 4) == "thumbs/ddim/7/1.webp"
    page.select_option("#pick-ys", "cfg")  # and cfg moves from X into Y super-axis blocks
    assert page.input_value("#pick-x") == ""
    assert page.locator("tbody .super-row").count() == 3
    assert page.locator("td.cell").count() == 27
    assert page.get_attribute('td[data-key="dpm/7/2"] img', "src") == "thumbs/dpm/7/2.webp"


def test_tabs_fix_the_other_axes(page, grid):
    open_grid(page, grid)
    seed_tabs = page.locator('.axis-tabs[data-axis="seed"] [role="tab"]')
    seed_tabs.nth(1).click()
    assert thumb(page, 0, 0) == "thumbs/euler/5/2.webp"
    page.keyboard.press("ArrowRight")  # seed 3: every cell is skipped
    assert seed_tabs.nth(2).get_attribute("aria-selected") == "true"
    assert page.locator("td.cell img").count() == 0
    page.keyboard.press("ArrowRight")  # wraps round to seed 1
    assert thumb(page, 0, 0) == "thumbs/euler/5/1.webp"
    page.select_option("#pick-y", "")  # cfg gets tabs too
    page.focus('.axis-tabs[data-axis="seed"] [aria-selected="true"]')
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.closest('.axis-tabs').dataset.axis") == "cfg"
    page.keyboard.press("ArrowRight")
    assert page.locator('.axis-tabs[data-axis="cfg"] [aria-selected="true"]').inner_text() == "7"
    assert thumb(page, 0, 1) == "thumbs/ddim/7/1.webp"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.closest('.axis-tabs').dataset.axis") == "seed"


def test_url_hash_restores_the_view(page, grid):
    open_grid(page, grid, "#x=seed&y=sampler&xs=&ys=&desc=0&scale=1&sticky=1&labels=0&s.cfg=9&h.sampler=ddim")
    assert col_labels(page) == ["1", "2", "3"]
    assert row_labels(page) == ["Euler a", "DPM++ 2M"]
    assert thumb(page, 0, 0) == "thumbs/euler/9/1.webp"
    assert page.locator('.axis-tabs[data-axis="cfg"] [aria-selected="true"]').inner_text() == "9"
    assert page.eval_on_selector("body", "b => [...b.classList].sort().join(' ')") == "opt-scale opt-sticky"
    assert not page.is_checked("#opt-desc") and page.is_checked("#opt-scale")
    assert not page.is_visible(".axis-head .desc")
    # change the view through the page, then open its URL afresh
    page.select_option("#pick-ys", "cfg")
    page.click("#advanced summary")
    page.click('#show-values input[data-axis="seed"][data-value="2"]')
    page.check("#opt-labels")
    url, keys = page.url, shown_keys(page)
    assert "ys=cfg" in url and "h.seed=2" in url and "labels=1" in url
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_selector("table.grid")
    assert shown_keys(page) == keys
    assert col_labels(page) == ["1", "3"]
    assert page.is_checked("#opt-labels")


def test_show_checkboxes_hide_and_show_values(page, grid):
    open_grid(page, grid)
    page.click("#advanced summary")
    page.uncheck('#show-values input[data-axis="sampler"][data-value="ddim"]')
    assert col_labels(page) == ["Euler a", "DPM++ 2M"]
    cfg_all = '#show-values fieldset[data-axis="cfg"] .show-all'
    assert page.eval_on_selector(cfg_all, "box => box.indeterminate")
    page.check(cfg_all)
    assert row_labels(page) == ["5", "7", "9", "12"]
    page.uncheck(cfg_all)
    assert page.locator("td.cell").count() == 0
    assert "No values are shown" in page.inner_text("#grid")
    assert "h.cfg=5,7,9,12&" in page.url


def test_popup_shows_the_cell_and_moves_with_the_arrow_keys(page, grid):
    open_grid(page, grid)
    page.click('td[data-key="euler/5/1"] img')
    assert page.is_visible("#popup")
    assert page.get_attribute("#popup-figure img", "src") == "images/euler/5/1.png"

    def meta(name: str) -> str:
        return page.inner_text(f'#popup-params tr[data-name="{name}"] td')

    assert meta("sampler") == "Euler a" and meta("cfg_scale") == "5" and meta("seed") == "1"
    assert meta("prompt") == "a lighthouse at dusk" and meta("render time") == "1.25 s"
    assert "Sampler: Euler a, CFG scale: 5, Seed: 1" in page.inner_text("#popup-parameters")
    page.click("#popup-copy")
    page.wait_for_function("document.getElementById('popup-copied').textContent !== ''")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#popup-figure img", "src") == "images/ddim/5/1.png"
    assert meta("sampler") == "DDIM"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#popup", "data-key") == PENDING  # pending: a placeholder, no image
    assert page.inner_text("#popup-figure") == "rendering\u2026"
    page.keyboard.press("ArrowRight")  # the edge of the grid: stays put
    assert page.get_attribute("#popup", "data-key") == PENDING
    page.keyboard.press("ArrowUp")
    assert meta("cfg_scale") == "7" and meta("sampler") == "DPM++ 2M"
    page.keyboard.press("Escape")
    assert not page.is_visible("#popup")


def test_skipped_cells_show_a_placeholder(page, grid):
    open_grid(page, grid, "#x=seed&y=cfg")
    skipped = page.locator('td[data-key="euler/5/3"]')
    assert skipped.get_attribute("data-state") == "skipped"
    assert skipped.locator(".placeholder.skipped").inner_text() == "skipped"
    assert skipped.locator("img").count() == 0
    assert thumb(page, 0, 1) == "thumbs/euler/5/2.webp"


def test_pending_cell_fills_in_while_the_run_goes_on(page, tmp_path):
    data = build_grid(tmp_path)
    open_grid(page, tmp_path)
    pending = page.locator(f'td[data-key="{PENDING}"]')
    assert pending.inner_text() == "rendering\u2026"
    page.eval_on_selector("table.grid", "t => { t.dataset.marker = 'same'; }")
    data["cells"][PENDING] = _cell(PENDING, tmp_path)
    data["progress"].update(done=data["progress"]["done"] + 1, running=False)
    write_data(tmp_path, data)
    page.wait_for_selector(f'td[data-key="{PENDING}"] img', timeout=8000)
    assert thumb(page, 2, 2) == f"thumbs/{PENDING}.webp"
    assert page.get_attribute("table.grid", "data-marker") == "same"  # filled in, not rebuilt
    assert "24 / 36 rendered" in page.inner_text("#progress")
    assert "complete" in page.inner_text("#progress")


def test_toggles_change_the_page(page, grid):
    open_grid(page, grid)
    assert page.is_visible("thead .col-label .desc")
    page.uncheck("#opt-desc")
    assert not page.is_visible("thead .col-label .desc")
    width = page.eval_on_selector("table.grid", "t => t.getBoundingClientRect().width")
    page.check("#opt-scale")
    scaled = page.eval_on_selector("table.grid", "t => t.getBoundingClientRect().width")
    assert scaled > width and scaled > 1000
    page.check("#opt-sticky")
    assert page.eval_on_selector("#controls", "c => getComputedStyle(c).position") == "sticky"
    assert page.eval_on_selector("thead", "t => getComputedStyle(t).position") == "sticky"
    page.uncheck("#opt-labels")
    assert page.eval_on_selector("thead", "t => getComputedStyle(t).position") == "static"
    assert re.search(r"desc=0&scale=1&sticky=1&labels=0", page.url)


def test_the_popup_toggles_a_sam_edits_mask_overlay(page, tmp_path):
    out = tmp_path / "sam-grid"
    data = build_grid(out)
    for key in ("euler/5/1", "ddim/5/1"):
        overlay = f"images/{key}.overlay.png"
        (out / overlay).write_bytes(_picture(key, 128, "PNG"))
        data["cells"][key]["files"] = {"mask": f"images/{key}.mask.png", "overlay": overlay}
    write_data(out, data)
    open_grid(page, out)
    page.click('td[data-key="euler/7/1"] img')
    assert not page.is_visible("#popup-files")  # a cell without a SAM edit has nothing to switch
    page.keyboard.press("ArrowUp")
    mask = '#popup-files button[data-file="overlay"]'
    assert page.is_visible(mask) and page.get_attribute(mask, "aria-pressed") == "false"
    assert page.inner_text(mask) == "Mask"
    page.click(mask)
    assert page.get_attribute("#popup-figure img", "src") == "images/euler/5/1.overlay.png"
    assert page.get_attribute(mask, "aria-pressed") == "true"
    page.keyboard.press("ArrowRight")  # the choice holds while moving between edited cells
    assert page.get_attribute("#popup-figure img", "src") == "images/ddim/5/1.overlay.png"
    page.keyboard.press("m")  # the overlay is the last file: M comes round to the image
    assert page.get_attribute("#popup-figure img", "src") == "images/ddim/5/1.png"
    assert page.get_attribute(mask, "aria-pressed") == "false"
