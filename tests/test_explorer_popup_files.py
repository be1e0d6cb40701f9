"""The popup's switcher between a cell's image and its extra files (the journal's `files`: name -> path), in
Debian's Chromium, opened from disk and served by `gridgen serve`.

The grid is the browser tests' synthesized one; one cell carries HDR brackets, a change map, a region layout
and a SAM overlay, each written here as a PNG of its own size, so the size the browser decoded tells which
file is on show.
"""

from __future__ import annotations

import io
from pathlib import Path

from browser import open_grid, watched_page
from PIL import Image
from test_explorer_browser import build_grid
from test_viewer import TOKEN
from test_viewer_browser import serving

from gridgen.explorer import write_data
from gridgen.viewer import create_app

KEY = "euler/5/1"
# name -> (label, size): every file a size of its own
FILES = {
    "bracket_1": ("Bracket 1", (40, 30)),
    "bracket_2": ("Bracket 2", (42, 30)),
    "bracket_3": ("Bracket 3", (44, 30)),
    "change_map": ("Change map", (46, 30)),
    "overlay": ("Mask", (48, 30)),
    "regions": ("Regions", (50, 30)),
}
IMAGE_SIZE = [128, 128]  # build_grid's images


def _png(size: tuple[int, int], rgb: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, "PNG")
    return buffer.getvalue()


def build(out: Path) -> None:
    data = build_grid(out)
    files = {}
    for n, (name, (_, size)) in enumerate(FILES.items()):
        files[name] = f"images/{KEY}.{name}.png"
        (out / files[name]).write_bytes(_png(size, (40 * n, 90, 200 - 30 * n)))
    data["cells"][KEY]["files"] = files
    write_data(out, data)


SHOWN_JS = """() => new Promise(resolve => {
  const img = document.querySelector('#popup-figure img');
  const done = () => resolve({src: img.getAttribute('src'), size: [img.naturalWidth, img.naturalHeight],
                              pressed: [...document.querySelectorAll('#popup-files [aria-pressed="true"]')]
                                .map(b => b.dataset.file)});
  if (img.complete && img.naturalWidth) done(); else img.addEventListener('load', done, {once: true});
})"""


def shown(page) -> dict:
    return page.evaluate(SHOWN_JS)


def check_switcher(page) -> None:
    """With the popup open on KEY: a button per file plus the image, each shows its file, the image comes back."""
    buttons = page.locator("#popup-files button")
    assert buttons.all_inner_texts() == ["Image"] + [label for label, _ in FILES.values()]  # in name order
    assert shown(page) == {"src": f"images/{KEY}.png", "size": IMAGE_SIZE, "pressed": [""]}
    for name, (_, size) in FILES.items():
        page.click(f'#popup-files button[data-file="{name}"]')
        assert shown(page) == {"src": f"images/{KEY}.{name}.png", "size": list(size), "pressed": [name]}
    page.click('#popup-files button[data-file=""]')
    assert shown(page) == {"src": f"images/{KEY}.png", "size": IMAGE_SIZE, "pressed": [""]}


def test_each_extra_file_has_a_button_that_shows_it_and_the_image_comes_back(browser, tmp_path):
    build(tmp_path)
    with watched_page(browser, 1280, 900) as page:
        open_grid(page, tmp_path)
        hash_before = page.evaluate("location.hash")
        page.click(f'td[data-key="{KEY}"] img')
        check_switcher(page)
        # the keyboard: the buttons take focus and Enter/Space press them; M steps on, Shift+M back, round
        page.focus('#popup-files button[data-file="change_map"]')
        page.keyboard.press("Enter")
        assert shown(page)["pressed"] == ["change_map"]
        page.keyboard.press("Tab")
        page.keyboard.press("Space")
        assert shown(page)["src"] == f"images/{KEY}.overlay.png"
        page.keyboard.press("m")
        assert shown(page)["src"] == f"images/{KEY}.regions.png"
        page.keyboard.press("m")  # past the last file: the image
        assert shown(page)["src"] == f"images/{KEY}.png"
        page.keyboard.press("Shift+M")
        assert shown(page)["src"] == f"images/{KEY}.regions.png"
        # a cell without extra files shows its image and no switcher; the choice holds for the next cell with one
        page.keyboard.press("ArrowDown")
        assert not page.is_visible("#popup-files")
        assert page.get_attribute("#popup-figure img", "src") == "images/euler/7/1.png"
        page.keyboard.press("ArrowUp")
        assert shown(page)["src"] == f"images/{KEY}.regions.png"
        page.keyboard.press("Escape")
        # the grid and the view's link are what they were: the switcher is the popup's alone
        assert page.get_attribute(f'td[data-key="{KEY}"] img', "src") == f"thumbs/{KEY}.webp"
        assert page.evaluate("location.hash") == hash_before


def test_the_switcher_works_on_a_served_grid(browser, tmp_path):
    root = tmp_path / "root"
    build(root / "files")
    app = create_app(root, token=TOKEN, start_worker=False)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10000)
    page = context.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    with serving(app) as base:
        page.goto(f"{base}/?token={TOKEN}")
        page.goto(f"{base}/g/files/")
        page.wait_for_selector("table.grid")
        page.click(f'td[data-key="{KEY}"] img')
        check_switcher(page)
        context.close()
    assert errors == []
    assert requests and all(url.startswith(base) for url in requests), requests
