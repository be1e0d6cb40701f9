"""Rough edges of the explorer a demanding user hit, each pinned by a browser test (Debian's Chromium,
file://): small images shown at their real size with crisp pixels, fit-to-window on a 10,000-cell grid,
hiding a tab axis's chosen value, the popup's parameter list and buttons, the sticky header rows, and
the small ones (keys, the URL, the corner label, touch stars, auto-cycle on an X/Y axis)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from browser import open_grid, publish_square_grid, swatch_webp, watched_page
from PIL import Image

from gridgen.explorer import write_data
from tests.test_explorer_browser import build_grid

# what a plain txt2img cell's params hold: every registered param, most never used by it
UNUSED = {"sam_model": "", "sam_prompt": "", "inpaint_mode": "fill", "ella_text_encoder": "", "upscale_by": 1.0,
          "upscaler": "", "hires_fix": False, "hires_steps": 0, "denoising_strength": 0.75, "clip_skip": 1,
          "eta": 0.0, "s_churn": 0.0, "s_noise": 1.0, "tiling": False, "vae": "", "lora": "", "refiner": "",
          "refiner_switch": 0.8, "outpaint": "", "dilate": 0, "mask_blur": 4, "hdr": False, "resize_to": "",
          "depth_model": "", "image_guidance": 1.5, "noise_offset": 0.0, "init_image": "", "mask": "",
          "restore_faces": False, "karras": False, "sigma_min": 0.0, "sigma_max": 0.0, "rho": 7.0}


@pytest.fixture
def page(browser):
    with watched_page(browser, 1280, 900) as tab:
        yield tab



def _png(size: int, fmt: str) -> bytes:
    image = Image.new("RGB", (size, size), (250, 250, 250))
    image.putpixel((size // 2, size // 2), (255, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_small_images_are_shown_at_their_real_size_with_crisp_pixels(page, tmp_path):
    # SAM edits take their size from init_image: no width/height in their params, 64 px files
    data = build_grid(tmp_path)
    data["base_params"] = {"prompt": "a lighthouse at dusk"}
    for cell in data["cells"].values():
        cell["params"] = {k: v for k, v in cell["params"].items() if k not in ("width", "height")}
        cell["size"] = [64, 64]
        (tmp_path / cell["image"]).write_bytes(_png(64, "PNG"))
        (tmp_path / cell["thumb"]).write_bytes(_png(64, "WEBP"))
        cell["files"] = {"overlay": cell["image"]}
    write_data(tmp_path, data)
    open_grid(page, tmp_path)
    cell = page.locator('td[data-key="euler/5/1"] img')
    assert cell.evaluate("i => i.getBoundingClientRect().width") == 128  # 64 px, twice: crisp
    assert cell.evaluate("i => getComputedStyle(i).imageRendering") == "pixelated"
    cell.click()
    figure = page.locator("#popup-figure img")
    page.wait_for_function("document.querySelector('#popup-figure img').complete")
    assert figure.evaluate("i => i.getBoundingClientRect().width") > 500  # fills the popup's room
    page.wait_for_function("getComputedStyle(document.querySelector('#popup-figure img')).imageRendering"
                           " === 'pixelated'")
    page.click('#popup-files button[data-file="overlay"]')  # the SAM overlay is shown at the same size
    assert figure.evaluate("i => i.getBoundingClientRect().width") > 500


def test_hiding_the_chosen_value_of_a_tab_axis_moves_to_the_next_shown_value(page, tmp_path):
    build_grid(tmp_path)
    open_grid(page, tmp_path)
    assert page.get_attribute('.axis-tabs[data-axis="seed"] [aria-selected="true"]', "data-value") == "1"
    page.click("#advanced summary")
    page.uncheck('#show-values input[data-axis="seed"][data-value="1"]')
    assert page.get_attribute('.axis-tabs[data-axis="seed"] [aria-selected="true"]', "data-value") == "2"
    assert page.get_attribute('td[data-key="euler/5/2"] img', "src") == "thumbs/euler/5/2.webp"
    assert "s.seed=2" in page.url


def test_the_popup_shows_what_matters_first_and_keeps_its_buttons_in_view(page, tmp_path):
    data = build_grid(tmp_path)
    for cell in data["cells"].values():
        cell["params"] = {**UNUSED, **cell["params"]}
    write_data(tmp_path, data)
    open_grid(page, tmp_path)
    page.click('td[data-key="ddim/7/1"] img')
    rows = page.locator("#popup-params tr[data-name]:visible")
    names = rows.evaluate_all("trs => trs.map(tr => tr.dataset.name)")
    assert names[:3] == ["Sampler", "CFG scale", "Seed"]  # the axes first
    assert set(names[3:]) == {"prompt", "steps", "sampler", "cfg_scale", "width", "height", "seed", "size",
                              "render time"} - {"size"}
    assert names.count("seed") == 1 and page.locator('#popup-params tr[data-name="seed"]').count() == 1
    assert not page.is_visible('#popup-params tr[data-name="sam_model"]')
    assert "34 more" in page.inner_text("#popup-more")
    page.click("#popup-more")
    assert page.is_visible('#popup-params tr[data-name="sam_model"]')
    for button in ("#popup-star", "#popup-copy"):
        box = page.locator(button).bounding_box()
        assert box["y"] + box["height"] <= 900
    assert "M shows" in page.inner_text("#popup .hint")
    page.keyboard.press("Shift+S")  # with Shift, as with the plain key
    assert page.get_attribute("#popup-star", "aria-pressed") == "true"


@pytest.fixture(scope="module")
def big_grid(tmp_path_factory) -> Path:
    """100 x 100 cells (six thumbnail files shared by all: the page only needs them to load)."""
    out = tmp_path_factory.mktemp("big")
    (out / "thumbs").mkdir()
    for i in range(6):
        (out / "thumbs" / f"t{i}.webp").write_bytes(swatch_webp(i))
    return publish_square_grid(out, "big", "{name} value {i}", lambda name, i: {},
                               lambda i, j: {"image": f"thumbs/t{(i + j) % 6}.webp",
                                             "thumb": f"thumbs/t{(i + j) % 6}.webp", "seed": 0})


LABELS_JS = """() => {
  const box = el => el.getBoundingClientRect();
  const cols = [...document.querySelectorAll('thead th.col-label .label-title')].filter(t => t.textContent);
  const rows = [...document.querySelectorAll('tbody th.row-label .label-title')].filter(t => t.textContent);
  const rowTops = rows.map(t => box(t).top);
  const cell = r => box(document.querySelector(`td.cell[data-row="${r}"][data-col="0"]`)).top;
  return {
    colSizes: cols.map(t => [box(t).width, box(t).height]),
    rowGap: Math.min(...rowTops.slice(1).map((top, i) => top - rowTops[i])),
    rowHeight: Math.max(...rows.map(t => t.scrollHeight)),
    pitch: (cell(20) - cell(0)) / 20,
    cellW: box(document.querySelector('td.cell img')).width,
    positioned: [...document.querySelectorAll('td.cell, td.cell *')]
      .filter(e => getComputedStyle(e).position !== 'static').length,
  };
}"""


def test_fit_to_window_on_10000_cells_keeps_labels_readable_and_builds_only_what_is_near(page, big_grid):
    open_grid(page, big_grid, "#x=a&y=b&scale=1")
    found = page.evaluate(LABELS_JS)
    # labels turn to read bottom-up and skip columns too narrow for one: none collapses into a letter stack
    assert found["colSizes"] and all(w >= 10 and 10 <= h <= 120 for w, h in found["colSizes"])
    assert found["rowGap"] >= found["rowHeight"]  # row labels never overlap each other
    assert 5 <= found["cellW"] <= 12 and found["pitch"] == found["cellW"] + 2
    assert page.locator("td.cell").count() < 8000  # rows far below the screen stay spacers
    assert found["positioned"] == 0  # no per-cell layer beside the sticky header
    assert page.get_attribute('thead th.col-label:nth-of-type(3)', "title") == "a value 1"  # a skipped label
    page.click('td.cell[data-row="3"][data-col="4"] img')
    assert page.get_attribute("#popup", "data-key") == "a4/b3"


GAP_JS = """() => {
  const supers = document.querySelector('thead tr.super-head th.super-label').getBoundingClientRect();
  const labels = document.querySelector('thead tr:last-child th.col-label').getBoundingClientRect();
  const table = document.querySelector('table.grid').getBoundingClientRect();
  return {top: supers.bottom, bottom: labels.top, left: labels.left, right: table.right,
          under: document.querySelector('tbody tr:first-child').getBoundingClientRect().top};
}"""


def test_no_scrolled_image_shows_between_sticky_header_rows(page, tmp_path):
    build_grid(tmp_path)
    page.set_viewport_size({"width": 1280, "height": 360})
    open_grid(page, tmp_path, "#x=cfg&y=sampler&xs=seed&desc=0&labels=1")
    page.wait_for_function("[...document.images].every(img => img.complete && img.naturalWidth)")
    # scroll until the first row of images sits 20 px above the gap under the super-axis labels
    page.evaluate("""() => {
      const top = el => el.getBoundingClientRect().top + scrollY;
      const head = top(document.querySelector('thead'));
      const gapTop = document.querySelector('thead tr.super-head th.super-label').getBoundingClientRect().bottom
        + scrollY - head;
      window.scrollTo(0, top(document.querySelector('tbody tr')) - gapTop + 20);
    }""")
    gap = page.evaluate(GAP_JS)
    assert gap["under"] < gap["top"]  # the first row of images has scrolled under the header
    strip = page.screenshot(clip={"x": gap["left"], "y": gap["top"] - 0.5, "width": gap["right"] - gap["left"],
                                  "height": max(1, gap["bottom"] - gap["top"])})
    pixels = np.asarray(Image.open(io.BytesIO(strip)).convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(c) for c in pixel) for pixel in np.unique(pixels, axis=0)}
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(246, 246, 244)"
    accent = (53, 87, 201)  # the super-axis label's underline
    assert colours <= {(246, 246, 244), accent}, colours


def test_small_rough_edges(page, tmp_path):
    build_grid(tmp_path)
    # a link naming an axis the grid lacks falls back to the page's default instead of an empty X
    open_grid(page, tmp_path, "#x=steps&y=cfg")
    assert page.input_value("#pick-x") == "sampler" and page.locator("td.cell").count() == 9
    # in a corner too narrow for "Sampler ->", the arrow stays on its name's line
    page.add_style_tag(content="th.corner { width: 40px; max-width: 40px; }")
    same_line = page.locator("th.corner div").evaluate_all("""divs => divs.map(div => {
      const text = div.firstChild, n = text.length, top = (from, to) => {
        const range = document.createRange();
        range.setStart(text, from);
        range.setEnd(text, to);
        return range.getBoundingClientRect().top;
      };
      return top(n - 1, n) === top(n - 3, n - 2);
    })""")
    assert same_line == [True, True]
    # stars show without hovering, so a touch screen can star from the grid
    star = page.locator('td[data-key="ddim/7/1"] button.star')
    assert star.evaluate("b => getComputedStyle(b).opacity") == "1"
    assert star.evaluate("b => getComputedStyle(b).visibility") == "visible"
    # auto-cycle on an axis that is on the grid says why nothing cycles
    page.click("#advanced summary")
    page.fill('input[data-cycle="sampler"]', "2")
    page.dispatch_event('input[data-cycle="sampler"]', "change")
    note = page.locator('#show-values fieldset[data-axis="sampler"] .cycle-note')
    assert "X axis" in note.inner_text() and "warn" in note.get_attribute("class")


def test_the_wipe_follows_a_drag_and_the_saved_view_names_the_fixed_values(page, tmp_path):
    build_grid(tmp_path)
    open_grid(page, tmp_path, "#s.seed=2")
    page.click('td[data-key="euler/5/2"] img')
    page.click("#popup-compare")
    box = page.locator("#compare-wipe-box").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 10)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + 10, steps=4)
    page.mouse.up()
    assert page.eval_on_selector("#compare-wipe-box .wipe-top", "e => e.style.clipPath") == "inset(0px 75% 0px 0px)"
    assert page.input_value("#compare-wipe") == "25"
    assert page.evaluate("GridgenTools.viewCaption()") == "Samplers <vs> CFG \u00b7 Seed: 2"
