"""Explorer scale benchmark: a 10,000-cell grid in headless Chromium, timed with the Performance API.

Synthesizes output folders (tiny WebP thumbs, data written by gridgen's own explorer writer), opens
each from file:// in Debian's Chromium through Playwright, and prints

- time to interactive: the page's `gridgen:interactive` mark (first grid rendered and laid out),
  measured from navigation start, against the 1 s target;
- axis switches: the page's `gridgen:render` measures (state change -> DOM built -> layout done) and
  the wall time from the <select> change to the next animation frame, against the 100 ms target;
- scrolling: 30 mouse-wheel steps down the grid, counting the frames that took over 50 ms (the gaps between
  animation frames, and the page's long-animation-frame entries);
- fit images to the window (every column on screen, so thousands of cells at once): the wall time from
  the checkbox to the frame after the first paint, against the 1 s target, the column labels' size
  (rotated labels stay readable: a label at least 10 px wide and 1 line tall), and the time until every
  thumbnail on screen has loaded (they stream in after the first paint).

Two layouts: a 100 x 100 grid of two axes (X/Y swapped back and forth), and a 10 x 10 x 10 x 10 grid
with X/Y super-axes (10,000 cells in one nested table; X and Y traded with the super-axes).
Reports ratios (measured / target): below 1.0 meets the target. Not a test: nothing asserts.

    .venv/bin/python bench/explorer_scale.py [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
from pathlib import Path

from PIL import Image

from gridgen.explorer import write_data, write_page

CHROMIUM = "/usr/bin/chromium"
TTI_TARGET_MS = 1000.0
SWITCH_TARGET_MS = 100.0
PALETTE = [(200, 60, 60), (60, 160, 80), (60, 90, 200), (220, 180, 40), (150, 70, 180), (40, 170, 170)]


def _thumbs() -> list[bytes]:
    out = []
    for rgb in PALETTE:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), rgb).save(buffer, "WEBP")
        out.append(buffer.getvalue())
    return out


def synthesize(out: Path, shape: list[tuple[str, int]], page: dict) -> int:
    """Write a finished grid of the given axes (name, size) to `out`; returns the number of cells."""
    axes = [
        {
            "id": name,
            "title": name.upper(),
            "description": f"axis {name}",
            "default": None,
            "values": [
                {"id": f"{name}{i}", "title": f"{name} {i}", "description": "", "skip": False, "show": True,
                 "params": {name: i}}
                for i in range(size)
            ],
        }
        for name, size in shape
    ]
    thumbs = _thumbs()
    cells: dict[str, dict] = {}
    keys: list[list[str]] = [[]]
    for axis in axes:
        keys = [prefix + [v["id"]] for prefix in keys for v in axis["values"]]
    for n, coords in enumerate(keys):
        key = "/".join(coords)
        thumb = out / "thumbs" / f"{key}.webp"
        thumb.parent.mkdir(parents=True, exist_ok=True)
        thumb.write_bytes(thumbs[n % len(thumbs)])
        params = {"prompt": "a lighthouse at dusk, oil painting", "negative_prompt": "blurry", "steps": 20,
                  "sampler": "Euler a", "cfg_scale": 7.0, "seed": n, "width": 64, "height": 64,
                  "model": "gridgen-tiny"}
        cells[key] = {
            "image": f"images/{key}.png", "thumb": f"thumbs/{key}.webp", "seed": n, "params": params,
            "time": 0.42, "hash": f"{n:040x}",
            "parameters": f"a lighthouse at dusk, oil painting\nNegative prompt: blurry\nSteps: 20, "
                          f"Sampler: Euler a, CFG scale: 7.0, Seed: {n}, Size: 64x64, Model: gridgen-tiny",
        }
    data = {
        "version": 1, "title": "scale bench", "author": "", "description": "", "stylesheet": "", "format": "png",
        "page": {"show_descriptions": True, "autoscale": False, "sticky": False, "sticky_labels": True, **page},
        "axes": axes, "base_params": {"width": 64, "height": 64}, "cells": cells,
        "progress": {"total": len(cells), "done": len(cells), "skipped": 0, "failed": 0, "running": False},
    }
    write_page(out, data)
    write_data(out, data)
    return len(cells)


SWITCH_JS = """async ([role, axis]) => {
  const select = document.getElementById('pick-' + role);
  const start = performance.now();
  select.value = axis;
  select.dispatchEvent(new Event('change', {bubbles: true}));
  await new Promise(resolve => requestAnimationFrame(() => setTimeout(resolve, 0)));
  const frame = performance.now() - start;
  const measures = performance.getEntriesByName('gridgen:render', 'measure');
  return {frame, render: measures[measures.length - 1].duration, cells: document.querySelectorAll('td.cell').length};
}"""


FIT_JS = """async () => {
  const box = document.getElementById('opt-scale');
  const start = performance.now();
  box.click();
  await new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const paint = performance.now() - start;
  const label = document.querySelector('thead th.col-label .label-title').getBoundingClientRect();
  const shown = () => [...document.querySelectorAll('td.cell img')].filter(img => {
    const r = img.getBoundingClientRect();
    return r.bottom > 0 && r.top < innerHeight;
  });
  while (!shown().every(img => img.complete && img.naturalWidth)) await new Promise(r => setTimeout(r, 250));
  await new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(resolve)));  // ... and painted
  return {paint, loaded: performance.now() - start, cells: document.querySelectorAll('td.cell').length,
          onScreen: shown().length, labelW: label.width, labelH: label.height};
}"""


FRAMES_JS = """() => {
  window.benchFrames = [];
  window.benchLong = [];
  const tick = t => { window.benchFrames.push(t); if (!window.benchStop) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  new PerformanceObserver(list => {
    if (!window.benchStop) window.benchLong.push(...list.getEntries().map(e => e.duration));
  }).observe({type: 'long-animation-frame'});
}"""
GAPS_JS = """() => {
  window.benchStop = true;
  const f = window.benchFrames;
  return {gaps: f.slice(1).map((t, i) => t - f[i]), long: window.benchLong};
}"""
LONG_FRAME_MS = 50.0


def scroll(page) -> dict:
    """Frame gaps and long animation frames (ms) while the wheel scrolls the grid 30 steps down."""
    page.mouse.move(640, 600)
    page.evaluate(FRAMES_JS)
    for _ in range(30):
        page.mouse.wheel(0, 240)
        page.wait_for_timeout(60)
    page.wait_for_timeout(200)  # the last step's frames are reported
    frames = page.evaluate(GAPS_JS)
    page.evaluate("window.scrollTo(0, 0)")
    return frames


def measure(browser, out: Path, switches: list[tuple[str, str]], runs: int, fit: bool) -> dict:
    tti, boot, first_cells = [], [], 0
    frames, renders, cells, fits, scrolls = [], [], 0, [], []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []

        def record(error, errors=errors):
            errors.append(str(error))

        page.on("pageerror", record)
        page.goto(out.joinpath("index.html").as_uri())
        page.wait_for_function("performance.getEntriesByName('gridgen:interactive').length > 0", timeout=60000)
        marks = page.evaluate("""() => ({
          tti: performance.getEntriesByName('gridgen:interactive')[0].startTime,
          boot: performance.getEntriesByName('gridgen:boot')[0].startTime,
          cells: document.querySelectorAll('td.cell').length})""")
        tti.append(marks["tti"])
        boot.append(marks["boot"])
        first_cells = marks["cells"]
        for role, axis in switches:
            result = page.evaluate(SWITCH_JS, [role, axis])
            frames.append(result["frame"])
            renders.append(result["render"])
            cells = result["cells"]
        scrolls.append(scroll(page))
        if fit:
            fits.append(page.evaluate(FIT_JS))
        if errors:
            raise SystemExit(f"page errors: {errors}")
        context.close()
    return {"tti": tti, "boot": boot, "first_cells": first_cells, "frames": frames, "renders": renders,
            "cells": cells, "fits": fits, "scrolls": scrolls}


def _fmt(values: list[float]) -> str:
    return f"median {statistics.median(values):7.1f} ms  max {max(values):7.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="page loads per layout")
    parser.add_argument("--keep", help="write the synthesized grids here and keep them")
    args = parser.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("needs the playwright Python package", file=sys.stderr)
        return 1
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gridgen-scale-"))
    layouts = [
        ("100 x 100 (2 axes)", [("a", 100), ("b", 100)], {"x_axis": "a", "y_axis": "b"},
         [("x", "b"), ("x", "a")] * 3, True),
        ("10^4 nested (4 axes)", [("a", 10), ("b", 10), ("c", 10), ("d", 10)],
         {"x_axis": "a", "y_axis": "b", "x_super_axis": "c", "y_super_axis": "d"},
         [("x", "c"), ("y", "d"), ("x", "a"), ("y", "b")] * 2, True),
    ]
    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        for name, shape, page, switches, fit in layouts:
            out = root / name.split()[0].replace("^", "")
            count = synthesize(out, shape, page)
            size = (out / "data.js").stat().st_size
            stats = measure(browser, out, switches, args.runs, fit)
            results.append((name, count, size, stats))
        browser.close()
    print(f"explorer scale bench (headless Chromium, file://, {args.runs} loads per layout)")
    for name, count, size, stats in results:
        tti = statistics.median(stats["tti"])
        frame = statistics.median(stats["frames"])
        render = statistics.median(stats["renders"])
        print(f"\n{name}: {count} cells, data.js {size / 1e6:.1f} MB, "
              f"{stats['first_cells']} cells in the DOM after load, {stats['cells']} after switching")
        print(f"  data.js parsed (gridgen:boot)   {_fmt(stats['boot'])}")
        print(f"  time to interactive             {_fmt(stats['tti'])}  ratio {tti / TTI_TARGET_MS:.2f}")
        print(f"  axis switch, render + layout    {_fmt(stats['renders'])}  ratio {render / SWITCH_TARGET_MS:.2f}")
        print(f"  axis switch, to next frame      {_fmt(stats['frames'])}  ratio {frame / SWITCH_TARGET_MS:.2f}")
        gaps = [sum(gap > LONG_FRAME_MS for gap in run["gaps"]) for run in stats["scrolls"]]
        loafs = [sum(d > LONG_FRAME_MS for d in run["long"]) for run in stats["scrolls"]]
        worst = max(max(run["gaps"], default=0) for run in stats["scrolls"])
        print(f"  scrolling, 30 wheel steps       {statistics.median(gaps):.0f} frame gaps over "
              f"{LONG_FRAME_MS:.0f} ms, "
              f"{statistics.median(loafs):.0f} long animation frames (medians of loads {gaps} / {loafs}), "
              f"longest gap {worst:.0f} ms")
        if stats["fits"]:
            fits = stats["fits"]
            paint = statistics.median(f["paint"] for f in fits)
            print(f"  fit to window, to first paint   {_fmt([f['paint'] for f in fits])}  "
                  f"ratio {paint / TTI_TARGET_MS:.2f}")
            print(f"  fit to window, thumbs on screen {_fmt([f['loaded'] for f in fits])}  "
                  f"({fits[-1]['onScreen']} on screen, {fits[-1]['cells']} cells in the DOM)")
            print(f"  fit to window, a column label   {fits[-1]['labelW']:.0f} x {fits[-1]['labelH']:.0f} px "
                  f"({'readable' if fits[-1]['labelW'] >= 10 and fits[-1]['labelH'] >= 10 else 'collapsed'})")
    print("\nratio = measured / target (1 s to interactive or to first paint, 100 ms per switch); "
          "below 1.00 meets it")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
