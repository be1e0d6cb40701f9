"""Fixtures shared across test files: one Debian Chromium for every browser test of the run."""

from __future__ import annotations

import pytest
from browser import launch, sync_playwright


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()
