"""Scrolling a 100 x 100 grid in Debian's Chromium stays fluid: few long frames, and no frame re-builds the window.

The grid has a thumbnail file per cell (as a published grid has), so every row scrolled into view loads
its own images. The page is scrolled with the mouse wheel, 30 steps of 240 px, as a user would; the page's
Performance API counts the long animation frames (over 50 ms) and a MutationObserver counts the cells each
frame puts into the table. A window that is re-built every few steps (the whole table laid out again) shows
as a few hundred cells added in one frame and a long frame each time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import open_grid, publish_square_grid, swatch_webp, watched_page

STEPS = 30
STEP_PX = 240
LONG_FRAME_MS = 50
# In the quietest of three fresh loads (a busy machine only ever adds long frames). On one shared 2-core
# machine a page that re-built its window every few wheel steps had 9 or 10 long frames (and 238 cells
# added in one frame); rows that follow the scroll had 2 or 3.
MOST_LONG_FRAMES = 5


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """100 x 100 cells, each with a thumbnail file of its own (the browser decodes every one it shows)."""
    out = tmp_path_factory.mktemp("scroll")
    for i in range(100):
        (out / "thumbs" / f"a{i}").mkdir(parents=True)
        for j in range(100):
            (out / "thumbs" / f"a{i}" / f"b{j}.webp").write_bytes(swatch_webp(i + j))
    return publish_square_grid(out, "scroll", "{name} {i}", lambda name, i: {name: i},
                               lambda i, j: {"image": f"images/a{i}/b{j}.png", "thumb": f"thumbs/a{i}/b{j}.webp"})


WATCH_JS = """() => {
  window.scrollWatch = {frames: [], added: [0]};
  new PerformanceObserver(list => {
    for (const entry of list.getEntries()) window.scrollWatch.frames.push(entry.duration);
  }).observe({type: 'long-animation-frame'});
  new MutationObserver(records => {
    let cells = 0;
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeType === 1) cells += node.matches('td.cell') ? 1 : node.querySelectorAll('td.cell').length;
      }
    }
    window.scrollWatch.added[window.scrollWatch.added.length - 1] += cells;
  }).observe(document.getElementById('grid'), {childList: true, subtree: true});
  const tick = () => { window.scrollWatch.added.push(0); requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}"""


def scroll_once(browser, grid: Path) -> dict:
    """Long frames and the most cells one frame added, over STEPS wheel steps down a freshly opened page."""
    with watched_page(browser, 1280, 900, timeout_ms=60000) as page:
        open_grid(page, grid)
        page.wait_for_function("performance.getEntriesByName('gridgen:interactive').length > 0")
        page.wait_for_timeout(500)  # the first screen's thumbnails have loaded
        page.evaluate(WATCH_JS)
        page.mouse.move(640, 600)
        for _ in range(STEPS):
            page.mouse.wheel(0, STEP_PX)
            page.wait_for_timeout(60)
        page.wait_for_timeout(200)
        watch = page.evaluate("window.scrollWatch")
        scrolled = page.evaluate("scrollY")
    assert scrolled >= STEPS * STEP_PX * 0.9  # the wheel did scroll the grid
    return {"long": sum(d > LONG_FRAME_MS for d in watch["frames"]), "most_cells": max(watch["added"])}


def test_scrolling_a_100_by_100_grid_builds_a_row_or_two_per_frame_and_few_long_frames(browser, grid):
    runs = [scroll_once(browser, grid) for _ in range(3)]
    # a wheel step brings two or three rows of some 19 cells into the overscan; the whole window is some 240
    # cells: no frame builds it again (in the quietest load: a busy machine may fold a few steps into one frame)
    assert min(run["most_cells"] for run in runs) <= 100, runs
    assert min(run["long"] for run in runs) <= MOST_LONG_FRAMES, runs
