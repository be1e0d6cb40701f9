"""The explorer's insight panel in Chromium: the influence bar chart, picking the two axes that matter,
near-duplicate values, hiding zero-influence axes, colouring cells by a score and sorting by it, and the
navigation toggle. The grid is the synthesized one of test_explorer_browser.py with the influence and
metrics a run would publish (gridgen/metrics.py), so each figure here is known."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import open_grid, watched_page

from gridgen.explorer import write_data
from tests.test_explorer_browser import CFGS, build_grid


def with_insight(data: dict) -> dict:
    data["influence"] = [
        {"axis": "sampler", "distance": 31.5, "ssim": 0.31, "pairs": 21,
         "values": {"euler": 30.0, "ddim": 29.0, "dpm": 35.5}, "duplicates": {}},
        {"axis": "cfg", "distance": 4.25, "ssim": 0.93, "pairs": 24,
         "values": {"5": 5.0, "7": 3.0, "9": 3.0, "12": 6.0}, "duplicates": {"9": "7"}},
        {"axis": "seed", "distance": 0.0, "ssim": 1.0, "pairs": 8, "values": {"1": 0.0, "2": 0.0},
         "duplicates": {"2": "1"}},
    ]
    for key, cell in data["cells"].items():
        sampler, cfg, seed = key.split("/")
        # luminance falls as cfg rises, so sorting by it reverses the cfg rows
        cell["metrics"] = {"luminance": 80.0 - 10 * CFGS.index(cfg) - int(seed), "shadows": 0.0, "highlights": 0.0,
                           "colourfulness": 20.0, "sharpness": 100.0 + CFGS.index(cfg)}
        cell["scores"] = {"aesthetic": 5.0 + 0.5 * CFGS.index(cfg)}
    return data


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("insight")
    write_data(out, with_insight(build_grid(out)))
    return out


@pytest.fixture
def page(browser):
    with watched_page(browser, 1280, 900, timeout_ms=5000) as tab:
        yield tab



def test_the_bar_chart_ranks_the_axes_and_picks_the_two_that_matter(page, grid):
    open_grid(page, grid, "#x=seed&y=sampler")
    bars = page.locator("#influence-bars li")
    assert bars.evaluate_all("items => items.map(li => li.dataset.axis)") == ["sampler", "cfg", "seed"]
    assert page.inner_text('#influence-bars li[data-axis="seed"] .bar-value') == "no change"
    assert "zero" in page.get_attribute('#influence-bars li[data-axis="seed"]', "class")
    widths = bars.locator(".bar-fill").evaluate_all("fills => fills.map(f => f.getBoundingClientRect().width)")
    assert widths[0] > widths[1] > widths[2] == 0
    page.click("#pick-top")
    assert page.input_value("#pick-x") == "sampler" and page.input_value("#pick-y") == "cfg"
    assert "x=sampler&y=cfg" in page.url
    assert "X" in page.inner_text('#influence-bars li[data-axis="sampler"] .bar-label')
    page.click('#influence-bars li[data-axis="cfg"] .bar-label')  # a bar puts its axis on X
    assert page.input_value("#pick-x") == "cfg" and page.input_value("#pick-y") == "sampler"
    page.screenshot(path="/tmp/explorer-insight.png")


def test_near_duplicates_are_greyed_and_zero_influence_axes_hide(page, grid):
    open_grid(page, grid, "#x=sampler&y=cfg")
    assert page.get_attribute('tbody th.row-label:has-text("9")', "class").split() == ["row-label", "near-dup"]
    assert page.get_attribute('tbody th.row-label:has-text("7")', "class") == "row-label"
    assert page.get_attribute('tbody th.row-label:has-text("9")', "title") == "Nearly the same images as 7"
    assert "near-dup" in page.get_attribute('.axis-tabs[data-axis="seed"] [data-value="2"]', "class")
    # the synthesized images all differ by hash: only the published influence can say seed changes nothing
    page.check("#opt-same")
    assert page.locator('.axis-tabs[data-axis="seed"]').count() == 0
    assert "Seed" in page.inner_text("#identical-note")


def test_colour_cells_by_a_metric_and_sort_a_column_by_it(page, grid):
    open_grid(page, grid, "#x=sampler&y=cfg")
    options = page.locator("#score-field option").evaluate_all("os => os.map(o => o.value)")
    assert {"metrics.luminance", "metrics.sharpness", "scores.aesthetic", "params.cfg_scale", "time"} <= set(options)
    page.select_option("#score-field", "metrics.luminance")
    heat = page.locator("td.cell.heat")
    assert heat.count() == 8  # 9 cells shown, one still rendering
    assert page.inner_text('td[data-key="euler/5/1"] .score') == "79.0"
    low = page.eval_on_selector('td[data-key="euler/9/1"]', "td => getComputedStyle(td).backgroundColor")
    high = page.eval_on_selector('td[data-key="euler/5/1"]', "td => getComputedStyle(td).backgroundColor")
    assert low != high
    assert page.inner_text("#score-legend .legend-end >> nth=0") == "48.00"  # cfg 12, seed 2
    assert page.inner_text("#score-legend .legend-end >> nth=1") == "79.00"
    # the DDIM column's rows, highest luminance first: cfg 5, 7, 9 -> unchanged; sort by sharpness reverses
    page.select_option("#score-field", "metrics.sharpness")
    page.click('thead th.col-label:has-text("DDIM") button.sort')
    assert page.locator("tbody th.row-label .label-title").all_inner_texts() == ["9", "7", "5"]
    assert "score=metrics.sharpness&sort=col//ddim&" in page.url
    url = page.url
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_selector("table.grid")
    assert page.locator("tbody th.row-label .label-title").all_inner_texts() == ["9", "7", "5"]
    assert page.input_value("#score-field") == "metrics.sharpness"
    page.click('thead th.col-label:has-text("DDIM") button.sort')  # again: unsorted
    assert page.locator("tbody th.row-label .label-title").all_inner_texts() == ["5", "7", "9"]
    page.select_option("#score-field", "")
    assert page.locator("td.cell.heat, td.cell .score, button.sort").count() == 0


def test_the_navigation_folds_away(page, grid):
    open_grid(page, grid)
    assert page.is_visible("#controls") and page.is_visible("#page-head")
    top = page.eval_on_selector("table.grid", "t => t.getBoundingClientRect().top")
    page.click("#nav-toggle")
    assert not page.is_visible("#controls") and not page.is_visible("#page-head")
    assert page.eval_on_selector("table.grid", "t => t.getBoundingClientRect().top") < top - 200
    assert "nav=0" in page.url and page.get_attribute("#nav-toggle", "aria-expanded") == "false"
    page.click("#nav-toggle")
    assert page.is_visible("#controls")
