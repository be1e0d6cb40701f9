"""The explorer's tools in a real browser, on a real `gridgen run` output opened from file://.

The grid: gridgen-tiny at 32x32 px, prompt (2) x cfg (3) x seed (2 values with the same seed, so
that axis renders identical images). Covers auto-cycle, the small-thumbnail scaling, save image of
the view, animations (GIF and animated WebP), compare mode, the flipbook, favourites, the filter,
hiding identical axes and the popup's metadata. Every test checks that the page logged no error and
that nothing but file:// (and the blob:/data: URLs the page makes itself) was requested.
Screenshots go to /tmp/explorer-*.png.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from browser import open_grid, watched_page
from PIL import Image

from gridgen.cli import main
from gridgen.store import read_journal
from tests.spec_helpers import write_spec

SPEC = """
grid:
  title: Tiny tools grid
  author: tests
  format: png
  params: {model: gridgen-tiny, steps: 2, width: 32, height: 32}
  x axis: cfg
  y axis: prompt
axes:
  prompt:
    title: Prompt
    values:
      red: {title: red circle, params: {prompt: a red circle}}
      blue: {title: blue square, params: {prompt: a blue square}}
  cfg:
    title: CFG scale
    values:
      c1: {title: "1", params: {cfg_scale: 1}}
      c7: {title: "7", params: {cfg_scale: 7}}
      c12: {title: "12", params: {cfg_scale: 12}}
  seed:
    title: Seed
    values:
      s1: {title: seed 1, params: {seed: 1}}
      s1b: {title: seed 1 again, params: {seed: 1}}
"""


def shot(page, name: str) -> None:
    page.screenshot(path=f"/tmp/explorer-{name}.png")


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tools")
    out = folder / "out"
    assert main(["run", str(write_spec(folder, SPEC)), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def page(browser):
    with watched_page(browser, 1200, 900, accept_downloads=True) as tab:
        yield tab



def grant_folder(page, selector: str, out: Path) -> None:
    """Answer the folder prompt a file:// page shows before it reads its own images."""
    prompt = page.locator(selector).locator(".folder-prompt")
    assert prompt.is_visible()
    assert "opened from disk" in prompt.inner_text()
    prompt.locator("input[type=file]").set_input_files(out)
    page.wait_for_function(f"!document.querySelector('{selector} .folder-prompt') || "
                           f"document.querySelector('{selector} .folder-prompt').hidden")


def pixels(path_or_bytes) -> np.ndarray:
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    return np.asarray(Image.open(source).convert("RGB"), dtype=np.int16)


def contains(haystack: np.ndarray, needle: np.ndarray, tolerance: float = 0.5) -> bool:
    """Whether `needle` appears somewhere in `haystack` (mean abs difference under `tolerance`)."""
    h, w = needle.shape[:2]
    for y in range(haystack.shape[0] - h + 1):
        for x in range(haystack.shape[1] - w + 1):
            if abs(int(haystack[y, x, 0]) - int(needle[0, 0, 0])) > 8:
                continue
            if np.abs(haystack[y:y + h, x:x + w] - needle).mean() < tolerance:
                return True
    return False


def test_small_thumbnails_are_scaled_up_pixelated(page, grid):
    open_grid(page, grid)
    assert page.locator("table.grid.pixelated").count() == 1
    img = page.locator('td[data-key="red/c1/s1"] img')
    assert img.get_attribute("src") == "thumbs/red/c1/s1.webp"
    assert img.get_attribute("loading") == "lazy"
    page.wait_for_function("[...document.images].every(img => img.complete && img.naturalWidth)")
    size = img.evaluate("i => [i.naturalWidth, i.getBoundingClientRect().width, getComputedStyle(i).imageRendering]")
    assert size == [32, 128, "pixelated"]
    page.click('td[data-key="red/c1/s1"] a')
    full = page.locator("#popup-figure img")
    assert full.get_attribute("src") == "images/red/c1/s1.png"  # the full image, not the thumbnail
    assert full.evaluate("i => i.getBoundingClientRect().width") >= 256
    shot(page, "popup")


def test_popup_metadata_matches_the_journal(page, grid):
    journal = read_journal(grid / "journal.jsonl")
    open_grid(page, grid, "#x=cfg&y=prompt&s.seed=s1b")
    page.click('td[data-key="blue/c7/s1b"] a')
    entry = journal["blue/c7/s1b"]

    def meta(name: str) -> str:
        return page.inner_text(f'#popup-params tr[data-name="{name}"] td')

    assert meta("seed") == str(entry["seed"])
    assert meta("render time") == f"{entry['time']:.2f} s"
    assert float(meta("cfg_scale")) == entry["params"]["cfg_scale"]
    assert meta("steps") == str(entry["params"]["steps"]) and meta("sampler") == entry["params"]["sampler"]
    assert meta("prompt") == entry["params"]["prompt"]
    assert meta("image hash") == entry["hash"]
    assert page.inner_text("#popup-parameters") == entry["parameters"]
    assert page.get_attribute("#popup-open", "href") == "images/blue/c7/s1b.png"
    page.click("#popup-copy")
    page.wait_for_function("document.getElementById('popup-copied').textContent !== ''")


def test_auto_cycle_steps_a_tab_axis(page, grid):
    open_grid(page, grid)
    page.click("#advanced summary")
    cycle = page.locator('input[data-cycle="seed"]')
    assert cycle.get_attribute("max") == "180"
    cycle.fill("0.3")
    cycle.dispatch_event("change")
    assert "c.seed=0.3" in page.url
    selected = '.axis-tabs[data-axis="seed"] [aria-selected="true"]'
    page.wait_for_function(f"document.querySelector('{selected}').dataset.value === 's1b'", timeout=3000)
    assert page.get_attribute('td[data-row="0"][data-col="0"] img', "src") == "thumbs/red/c1/s1b.webp"
    page.wait_for_function(f"document.querySelector('{selected}').dataset.value === 's1'", timeout=3000)
    cycle.fill("0")
    cycle.dispatch_event("change")
    assert "c.seed" not in page.url
    value = page.get_attribute(selected, "data-value")
    page.wait_for_timeout(700)
    assert page.get_attribute(selected, "data-value") == value
    # a link with a cycle period starts cycling; 0..180 s is enforced
    open_grid(page, grid, "#c.seed=500")
    page.click("#advanced summary")
    assert page.input_value('input[data-cycle="seed"]') == "180"


def test_save_image_of_the_view(page, grid):
    open_grid(page, grid)
    page.click("#tool-save")
    grant_folder(page, "#save-dialog", grid)
    with page.expect_download() as info:
        page.click("#save-go")
    download = info.value
    assert download.suggested_filename == "tiny-tools-grid-view.png"
    saved = pixels(download.path())
    assert saved.shape[0] > 2 * 32 and saved.shape[1] > 3 * 32
    # the full image of a cell is in it, at its own size
    assert contains(saved, pixels(grid / "images/blue/c12/s1.png"))
    # labels are drawn: the label column and the header hold dark text pixels
    assert (saved[:, : saved.shape[1] - 3 * 32] < 80).any()
    Image.open(download.path()).save("/tmp/explorer-saved-view.png")
    # JPEG at half scale
    page.select_option("#save-format", "jpeg")
    page.select_option("#save-scale", "0.5")
    with page.expect_download() as info:
        page.click("#save-go")
    half = Image.open(info.value.path())
    assert info.value.suggested_filename.endswith(".jpg") and half.format == "JPEG"
    assert half.width < saved.shape[1]
    # a view larger than the canvas limit is split into several files
    page.select_option("#save-format", "png")
    page.select_option("#save-scale", "1")
    page.evaluate("GridgenTools.limits.maxSide = 150")
    names = []
    page.on("download", lambda d: names.append(d.suggested_filename))
    page.click("#save-go")
    page.wait_for_function("document.getElementById('save-status').textContent.startsWith('Saved')")
    page.wait_for_timeout(300)
    assert len(names) > 1
    assert names[0] == "tiny-tools-grid-view-1.png"
    shot(page, "save")


def test_animation_along_an_axis_as_gif_and_webp(page, grid):
    open_grid(page, grid)
    page.click('td[data-key="red/c1/s1"] a')  # the animation of "one image" starts from this cell
    page.keyboard.press("Escape")
    page.click("#tool-animate")
    grant_folder(page, "#animate-dialog", grid)
    assert page.locator("#anim-axis option").evaluate_all("os => os.map(o => o.value)") == ["seed"]
    page.select_option("#anim-subject", "cell")
    page.select_option("#anim-axis", "cfg")
    page.fill("#anim-fps", "4")
    page.select_option("#anim-direction", "pingpong")
    with page.expect_download() as info:
        page.click("#anim-go")
    assert info.value.suggested_filename == "tiny-tools-grid-cfg.gif"
    gif = Image.open(info.value.path())
    assert gif.format == "GIF" and gif.n_frames == 4  # 1, 7, 12, 7
    assert gif.info["duration"] == 250 and gif.info["loop"] == 0
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB"), dtype=np.int16))
    order = ["c1", "c7", "c12", "c7"]
    for frame, cfg in zip(frames, order, strict=True):
        image = pixels(grid / f"images/red/{cfg}/s1.png")
        bottom = frame[-32:, :, :]  # the image sits under the caption band
        assert np.abs(bottom - image).mean() < 12, cfg  # a 256-colour palette is close, not exact
    # animated WebP, backwards, of the whole view along the seed axis
    page.select_option("#anim-subject", "view")
    page.select_option("#anim-axis", "seed")
    page.select_option("#anim-direction", "back")
    page.select_option("#anim-format", "webp")
    with page.expect_download() as info:
        page.click("#anim-go")
    webp = Image.open(info.value.path())
    assert webp.format == "WEBP" and webp.is_animated and webp.n_frames == 2
    webp.seek(0)
    first = np.asarray(webp.convert("RGB"), dtype=np.int16)
    assert first.shape[1] > 3 * 32
    page.wait_for_selector("#anim-preview img")
    shot(page, "animation")


def test_compare_modes(page, grid):
    open_grid(page, grid)
    page.click('td[data-key="red/c1/s1"] a')
    page.click("#popup-compare")
    assert not page.is_visible("#popup")
    dialog = page.locator("#compare-dialog")
    assert dialog.is_visible()
    a = page.locator('#compare-stage .compare-img[data-side="a"]')
    b = page.locator('#compare-stage .compare-img[data-side="b"]')
    assert a.get_attribute("data-key") == "red/c1/s1"
    assert b.get_attribute("data-key") == "red/c7/s1"  # the next value on the X axis
    assert "CFG scale: 1 (A) vs 7 (B)" in page.inner_text(".compare-caption")
    # wipe: the slider moves the edge of A over B
    page.fill("#compare-wipe", "20")
    clip = page.eval_on_selector("#compare-wipe-box .wipe-top", "e => e.style.clipPath")
    assert clip == "inset(0px 80% 0px 0px)"
    page.wait_for_function("[...document.querySelectorAll('#compare-stage img')].every(i => i.complete)")
    shot(page, "compare-wipe")
    # flicker: a button and an automatic rate
    page.check('input[name="compare-mode"][value="flicker"]')
    assert page.get_attribute("#compare-flicker", "data-showing") == "a"
    page.click("#compare-flip")
    assert page.get_attribute("#compare-flicker", "data-showing") == "b"
    page.check("#compare-auto")
    page.wait_for_function("document.getElementById('compare-flicker').dataset.showing === 'a'", timeout=2000)
    page.uncheck("#compare-auto")
    # side by side
    page.check('input[name="compare-mode"][value="side"]')
    assert page.locator(".side-by-side img").evaluate_all("is => is.map(i => i.getAttribute('src'))") == [
        "images/red/c1/s1.png",
        "images/red/c7/s1.png",
    ]
    # two values of one axis: B becomes A with the next seed
    page.select_option('select[data-side="b"][data-index="1"]', "c12")
    assert page.locator(".side-by-side img").nth(1).get_attribute("src") == "images/red/c12/s1.png"
    page.select_option("#compare-vary", "prompt")
    assert page.input_value('select[data-side="b"][data-index="0"]') == "blue"
    assert page.input_value('select[data-side="b"][data-index="1"]') == "c1"
    # the amplified difference needs the folder on file://
    page.check('input[name="compare-mode"][value="diff"]')
    grant_folder(page, "#compare-stage", grid)
    page.wait_for_function("document.getElementById('compare-stats').textContent.includes('max difference')")
    expected = np.abs(pixels(grid / "images/red/c1/s1.png") - pixels(grid / "images/blue/c1/s1.png")).max()
    assert page.get_attribute("#compare-diff", "data-max") == str(expected)
    assert page.eval_on_selector("#compare-diff", "c => [c.width, c.height]") == [32, 32]
    shot(page, "compare-diff")
    # identical images (the two seed values): no difference at all
    page.select_option("#compare-vary", "seed")
    page.check('input[name="compare-mode"][value="side"]')
    page.check('input[name="compare-mode"][value="diff"]')
    page.wait_for_function("document.getElementById('compare-diff').dataset.max === '0'")
    assert "0.0% of pixels differ" in page.inner_text("#compare-stats")


def test_flipbook_has_a_slider_per_axis(page, grid):
    open_grid(page, grid)
    page.click("#tool-flipbook")
    sliders = page.locator("#flipbook-sliders input[type=range]")
    assert sliders.count() == 3
    figure = page.locator("#flipbook-figure img")
    assert figure.get_attribute("src") == "images/red/c1/s1.png"
    page.focus("#flip-cfg")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert figure.get_attribute("src") == "images/red/c12/s1.png"
    assert page.inner_text('.flip-axis[data-axis="cfg"] output') == "12"
    page.fill("#flip-prompt", "1")
    assert figure.get_attribute("src") == "images/blue/c12/s1.png"
    assert "Prompt: blue square" in page.inner_text("#flipbook-caption")
    page.wait_for_function("document.querySelector('#flipbook-figure img').complete")
    shot(page, "flipbook")


def test_favourites_survive_a_reload_and_export(page, grid):
    open_grid(page, grid)
    page.hover('td[data-key="red/c7/s1"]')
    page.click('td[data-key="red/c7/s1"] button.star')
    assert page.get_attribute('td[data-key="red/c7/s1"] button.star', "aria-pressed") == "true"
    page.click('td[data-key="blue/c12/s1"] a')
    page.keyboard.press("s")  # S stars the popup's image
    assert page.get_attribute("#popup-star", "aria-pressed") == "true"
    page.keyboard.press("Escape")
    assert page.inner_text("#favourites-count") == "2"
    shot(page, "stars")
    page.reload()
    page.wait_for_selector("table.grid")
    assert page.locator("td.cell button.star.starred").evaluate_all("bs => bs.map(b => b.dataset.key)") == [
        "red/c7/s1",
        "blue/c12/s1",
    ]
    stored = page.evaluate("JSON.parse(localStorage.getItem('gridgen:favourites:' + location.pathname))")
    assert stored == ["red/c7/s1", "blue/c12/s1"]
    page.click("#tool-favourites")
    assert page.locator("#fav-list li").count() == 2
    shot(page, "favourites")
    with page.expect_download() as info:
        page.click("#fav-export")
    exported = json.loads(Path(info.value.path()).read_text())
    journal = read_journal(grid / "journal.jsonl")
    assert exported["grid"] == "Tiny tools grid"
    assert [f["key"] for f in exported["favourites"]] == ["red/c7/s1", "blue/c12/s1"]
    first = exported["favourites"][0]
    assert first["coords"] == {"prompt": "red", "cfg": "c7", "seed": "s1"}
    assert first["titles"] == {"Prompt": "red circle", "CFG scale": "7", "Seed": "seed 1"}
    assert first["params"] == journal["red/c7/s1"]["params"]
    assert first["seed"] == journal["red/c7/s1"]["seed"] and first["image"] == "images/red/c7/s1.png"
    # the starred images, in one ZIP (the folder is asked for first on file://)
    page.click("#fav-download")
    prompt = page.locator("#favourites-dialog .folder-prompt")
    assert prompt.is_visible()
    with page.expect_download() as info:
        prompt.locator("input[type=file]").set_input_files(grid)
    archive = zipfile.ZipFile(info.value.path())
    assert sorted(archive.namelist()) == ["favourites.json", "images/blue/c12/s1.png", "images/red/c7/s1.png"]
    assert archive.read("images/red/c7/s1.png") == (grid / "images/red/c7/s1.png").read_bytes()
    # unstar from the list
    page.click('#fav-list li[data-key="red/c7/s1"] .fav-remove')
    assert page.locator("#fav-list li").count() == 1
    assert page.inner_text("#favourites-count") == "1"


def test_filter_and_hiding_identical_axes(page, grid):
    open_grid(page, grid)
    page.select_option("#filter-axis", "prompt")
    page.fill("#filter-text", "blue")
    assert page.locator("tbody th.row-label .label-title").all_inner_texts() == ["blue square"]
    assert "f.prompt=blue" in page.url
    assert page.inner_text("#filter-chips") == "Prompt: \u201cblue\u201d \u00d7"
    page.select_option("#filter-axis", "cfg")
    page.fill("#filter-text", "1")  # titles "1" and "12"
    assert page.locator("thead th.col-label .label-title").all_inner_texts() == ["1", "12"]
    page.select_option("#filter-axis", "seed")
    page.fill("#filter-text", "again")  # a tab axis: its chosen value moves to the match
    assert page.get_attribute('.axis-tabs[data-axis="seed"] [aria-selected="true"]', "data-value") == "s1b"
    assert page.locator('.axis-tabs[data-axis="seed"] [role="tab"]:visible').count() == 1
    assert page.get_attribute('td[data-row="0"][data-col="1"]', "data-key") == "blue/c12/s1b"
    url = page.url
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_selector("table.grid")
    assert page.locator("td.cell").evaluate_all("ts => ts.map(t => t.dataset.key)") == ["blue/c1/s1b", "blue/c12/s1b"]
    page.click('#filter-chips .chip[data-axis="prompt"]')
    assert page.locator("tbody th.row-label").count() == 2
    page.click('#filter-chips .chip[data-axis="cfg"]')
    page.click('#filter-chips .chip[data-axis="seed"]')
    # the seed axis renders identical images for both values: hide it
    assert page.locator('.axis-tabs[data-axis="seed"]').count() == 1
    page.check("#opt-same")
    assert page.locator('.axis-tabs[data-axis="seed"]').count() == 0
    assert "Seed" in page.inner_text("#identical-note")
    assert page.locator('#pick-x option[value="seed"]').is_disabled()
    assert "same=1" in page.url
    shot(page, "filter")


GIF_JS = """() => {
  // 300 x 200 px of 200 colours in noise: many LZW dictionary resets; at most 256 colours, so exact
  const w = 300, h = 200, frames = [];
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  for (let f = 0; f < 2; f++) {
    const data = new Uint8ClampedArray(w * h * 4);
    for (let i = 0; i < w * h; i++) {
      const c = Math.floor(rand() * 200);
      data.set([c, (c * 7) % 256, 255 - c, 255], i * 4);
    }
    frames.push(new ImageData(data, w, h));
  }
  return GridgenCodecs.encodeGif(frames, {delayMs: 100}).then(bytes => ({
    gif: Array.from(bytes), frames: frames.map(f => Array.from(f.data)),
    zip: Array.from(GridgenCodecs.zipStore([{name: "a/b.txt", bytes: new TextEncoder().encode("hello")}])),
  }));
}"""


def test_codecs_round_trip(page, grid):
    open_grid(page, grid)
    result = page.evaluate(GIF_JS)
    gif = Image.open(io.BytesIO(bytes(result["gif"])))
    assert gif.size == (300, 200) and gif.n_frames == 2 and gif.info["duration"] == 100
    for i, expected in enumerate(result["frames"]):
        gif.seek(i)
        want = np.array(expected, dtype=np.uint8).reshape(200, 300, 4)[:, :, :3]
        assert np.array_equal(np.asarray(gif.convert("RGB")), want), i
    archive = zipfile.ZipFile(io.BytesIO(bytes(result["zip"])))
    assert archive.testzip() is None and archive.read("a/b.txt") == b"hello"
