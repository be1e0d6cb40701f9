"""Fixtures shared across test files: one Debian Chromium for every browser test of the run, and a CPU
backend over a test file's own `folder` of models and images."""

from __future__ import annotations

import pytest
from browser import launch, sync_playwright

from gridgen.backends import BackendContext
from gridgen.backends.diffusers_backend import DiffusersBackend


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture()
def backend(folder):
    """The diffusers backend on the CPU, with relative paths resolved in the test file's `folder` fixture
    (files that need another context define their own `backend`)."""
    instance = DiffusersBackend(BackendContext(spec_dir=folder, device="cpu"))
    yield instance
    instance.close()
