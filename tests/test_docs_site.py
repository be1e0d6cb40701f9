"""The documentation site builds with `mkdocs build --strict` (no broken link, no missing page, no flag or param
without help text) and opens from disk: every link of every page names a file that exists."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from gridgen import params as P
from gridgen.cli import subcommands

ROOT = Path(__file__).resolve().parent.parent


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          text=True, capture_output=True, timeout=600, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert done.returncode == 0, done.stderr
    return out


def test_every_flag_and_param_is_in_the_reference(site):
    cli = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    for name, _, parser in subcommands():
        assert f"gridgen {name}" in cli
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert f"<code>{option}</code>" in cli, f"gridgen {name} {option} is missing from the CLI page"
    params = (site / "reference" / "params.html").read_text(encoding="utf-8")
    for param in P.Registry():
        assert f'id="{param.name}"' in params, f"{param.name} has no entry on the params page"
        for alias in param.aliases:
            assert f"<code>{alias}</code>" in params


def test_pages_open_from_disk(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    assert not (site / "_addenda").exists() and not (site / "_hooks").exists()
    for page in pages:
        if page.name == "404.html":  # a web server's page, with links from the site's root
            continue
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for link in parser.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith(("#", "//", "data:", "mailto:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.is_file(), f"{page.relative_to(site)} links {link}, which is no file (file:// needs one)"
            assert not re.search(r"/$", parts.path)


def _hook():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gridgen_docs_reference", ROOT / "docs" / "_hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_flag_or_param_without_help_fails_the_build(monkeypatch, caplog):
    from gridgen import cli
    from gridgen.param_decl import Param

    def parser_with_a_bare_flag():
        parser = argparse.ArgumentParser(prog="gridgen")
        sub = parser.add_subparsers(dest="command")
        sub.add_parser("run", help="render a grid").add_argument("--bare")
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_with_a_bare_flag)
    monkeypatch.setattr(P, "Registry", lambda: [Param("bare_param", "int", 1)])
    hook = _hook()
    with caplog.at_level("WARNING"):
        assert "`--bare`" in hook.cli_markdown()
        assert "### `bare_param`" in hook.params_markdown()
    warned = " ".join(record.getMessage() for record in caplog.records if record.levelname == "WARNING")
    assert "--bare of gridgen run has no help text" in warned
    assert "param bare_param has no help text" in warned


def test_search_and_navigation_work_from_disk(site):
    """Opened from file://, offline: the nav leads to the generated reference and search finds a page, with no
    request leaving the machine and no error logged."""
    from browser import launch, sync_playwright, watched_page

    with sync_playwright() as playwright:
        browser = launch(playwright)
        with watched_page(browser, 1300, 900, timeout_ms=30000) as page:
            page.goto((site / "guide" / "viewer.html").as_uri())
            page.click("nav >> text=Params")
            assert page.url.endswith("/reference/params.html")
            page.click("label.md-search__icon, .md-search__input")
            page.keyboard.type("GRIDGEN_TOKEN", delay=50)
            page.wait_for_selector(".md-search-result__item")
            assert "viewer.html" in page.inner_html(".md-search-result__list")
        browser.close()
