"""Launches Debian's Chromium through Playwright for the browser tests.

Never a browser downloaded by `playwright install`: the tests use /usr/bin/chromium, with every
background service that could reach the network turned off. Where Chromium or Playwright is
missing the browser tests are skipped on a developer's machine and fail under CI (`CI` set),
so CI can never pass without running them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def sync_playwright():
    """Playwright's sync entry point, or a skip (a failure under CI) when it cannot run here."""
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        _unavailable("the `playwright` Python package is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    return start()


def launch(playwright):
    """Debian's Chromium, headless."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


LOCAL_SCHEMES = ("file://", "blob:", "data:")


class PageWatch:
    """Records a page's console errors, uncaught exceptions and requests, for after-test checks."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def assert_clean(self) -> None:
        """No error logged, and every request stayed on the machine (file://, or blob:/data: the page made)."""
        assert self.errors == []
        assert self.requests, "the request recorder saw nothing"
        assert [url for url in self.requests if not url.startswith(LOCAL_SCHEMES)] == []


@contextmanager
def watched_page(browser, width: int, height: int, timeout_ms: int = 8000, **options) -> Iterator:
    """A fresh page of `width` x `height` in its own context, checked clean (`PageWatch`) when the test is done."""
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    context.set_default_timeout(timeout_ms)
    tab = context.new_page()
    watch = PageWatch(tab)
    yield tab
    context.close()
    watch.assert_clean()


def open_grid(page, out: Path, hash_: str = "") -> None:
    """The explorer page of the grid in `out`, once its table is drawn."""
    page.goto((out / "index.html").as_uri() + hash_)
    page.wait_for_selector("table.grid")


def swatch_webp(index: int) -> bytes:
    """A 16 px WebP thumbnail in one of six colours, for synthetic grids that only need thumbnails to load."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (40 * (index % 6), 200 - 30 * (index % 6), 120)).save(buffer, "WEBP")
    return buffer.getvalue()


def publish_square_grid(out: Path, title: str, value_title: str, params_of, cell_of) -> Path:
    """Publishes a 100 x 100 grid of axes `a` and `b` into `out` without rendering: value i of axis `name` is
    titled `value_title.format(name=name, i=i)` and sets `params_of(name, i)`; `cell_of(i, j)` gives the cell
    at a=i, b=j its image and thumbnail fields."""
    from gridgen.explorer import write_data, write_page

    axes = [{"id": name, "title": name.upper(), "description": "", "default": None,
             "values": [{"id": f"{name}{i}", "title": value_title.format(name=name, i=i), "description": "",
                         "skip": False, "show": True, "params": params_of(name, i)} for i in range(100)]}
            for name in ("a", "b")]
    cells = {f"a{i}/b{j}": {"seed": j, "params": {}, "size": [64, 64], "time": 0.1, "hash": f"{i}-{j}",
                            "parameters": "", **cell_of(i, j)} for i in range(100) for j in range(100)}
    data = {"version": 1, "title": title, "author": "", "description": "", "stylesheet": "", "format": "png",
            "page": {"x_axis": "a", "y_axis": "b"}, "axes": axes, "base_params": {}, "cells": cells,
            "progress": {"total": 10000, "done": 10000, "skipped": 0, "failed": 0, "running": False}}
    write_page(out, data)
    write_data(out, data)
    return out
