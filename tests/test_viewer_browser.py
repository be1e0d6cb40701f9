"""`gridgen serve` in a real browser: Debian's Chromium through Playwright against the viewer running
on 127.0.0.1 (a free port, in a thread). Opens the index, opens a grid whose run was stopped after
one cell, resumes the run and sees the new images appear without a reload; stars a cell; queues a
spec from the runs page. Every test also checks that the page logged no error and requested
nothing but the viewer.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_viewer import TOKEN, render, resume_in_thread, spec_text
from werkzeug.serving import make_server

from gridgen.viewer import create_app
from gridgen.viewer.state import get_state

SCREENSHOT = Path("/tmp/viewer-grid.png")


def wait_until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextmanager
def serving(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        get_state(app).shutdown()
        server.shutdown()
        server.server_close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(10000)
    tab = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.allowed_errors = []  # console messages a test expects (a refused request logs one)
    yield tab
    context.close()
    assert [e for e in errors if not any(allowed in e for allowed in tab.allowed_errors)] == []
    assert requests and all(url.startswith("http://127.0.0.1:") for url in requests), requests


def test_a_new_image_appears_live_in_the_open_grid(page, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    text = spec_text(title="live grid", seeds=6)
    render(root / "live", text, first_batch_only=True, spec_dir=tmp_path)
    app = create_app(root, token=TOKEN, start_worker=False)
    with serving(app) as base:
        page.goto(f"{base}/?token={TOKEN}")  # sets the cookie, then drops the token from the URL
        assert page.url == f"{base}/"
        card = page.locator('.gv-grid[data-grid="live"]')
        assert card.locator(".gv-grid-title").inner_text() == "live grid"
        assert "1 / 6 rendered" in card.locator(".gv-progress-text").inner_text()
        assert card.locator(".gv-strip img").count() == 1
        card.locator(".gv-grid-title").click()
        page.wait_for_selector("table.grid")
        assert page.url == f"{base}/g/live/"
        assert page.locator('td[data-key="1"] img').count() == 1
        assert page.inner_text('td[data-key="2"]') == "not rendered"
        page.wait_for_selector('html[data-gv-live="open"]')
        page.eval_on_selector("table.grid", "t => { t.dataset.marker = 'same'; }")
        thread = resume_in_thread(root / "live", text, spec_dir=tmp_path)
        page.wait_for_selector('td[data-key="2"] img', timeout=30000)
        page.wait_for_selector('td[data-key="6"] img', timeout=30000)
        thread.join(30)
        assert page.get_attribute("table.grid", "data-marker") == "same"  # filled in, never reloaded
        assert page.get_attribute("html", "data-gv-cells") == "5"  # brought by the event stream
        assert page.get_attribute('td[data-key="6"] img', "src") == "thumbs/6.webp"
        page.wait_for_function("document.getElementById('progress').textContent.includes('6 / 6 rendered')")
        # the explorer's stars are kept by the server
        page.hover('td[data-key="3"]')
        page.click('td[data-key="3"] button.star')
        page.wait_for_selector('td[data-key="3"] button.star[aria-pressed="true"]')
        page.wait_for_function("document.getElementById('gv-count').textContent.includes('1 starred')")
        wait_until(lambda: [f["key"] for f in get_state(app).db.favourites("live")] == ["3"])
        page.wait_for_function("[...document.images].every(img => img.complete && img.naturalWidth)")
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        page.evaluate("localStorage.clear()")
        page.reload()
        page.wait_for_selector('td[data-key="3"] button.star[aria-pressed="true"]')
        page.goto(f"{base}/favourites")
        assert page.locator('.gv-favourite[data-key="3"] img').count() == 1
        page.click('.gv-favourite[data-key="3"] .gv-unstar')
        page.wait_for_selector(".gv-favourite", state="detached")
        wait_until(lambda: get_state(app).db.favourites() == [])


def test_runs_page_shows_problems_and_queues_a_spec(page, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    app = create_app(root, token=TOKEN, allow_runs=True, start_worker=False)
    with serving(app) as base:
        page.allowed_errors.append("status of 422")  # the refused spec
        page.goto(f"{base}/runs?token={TOKEN}")
        page.fill("#gv-name", "broken")
        page.fill("#gv-spec", "axes:\n  steps: 0, 5\n")
        page.click("#gv-submit button[type=submit]")
        page.wait_for_selector("#gv-problems li")
        assert page.inner_text("#gv-problems li").startswith("spec.yaml:2:10: steps must be")
        page.fill("#gv-name", "good")
        page.fill("#gv-spec", spec_text(title="from the browser"))
        page.click("#gv-submit button[type=submit]")
        page.wait_for_selector('#gv-queue tr[data-status="queued"]')
        assert "Queued #1 (good, 4 cells)" in page.inner_text("#gv-status")
        page.click("#gv-queue .gv-cancel")
        page.wait_for_selector('#gv-queue tr[data-status="cancelled"]')
        assert [r["status"] for r in get_state(app).db.runs()] == ["cancelled"]
