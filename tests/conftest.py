"""Shared pytest fixtures (the ``slow`` marker is registered in pyproject.toml)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The course's data folder, ``$DPEDU_DATA_DIR``; the test is skipped when it is missing."""
    value = os.environ.get("DPEDU_DATA_DIR")
    if not value:
        pytest.skip("DPEDU_DATA_DIR is not set (CI sets it to ../shared/data, the course's data folder)")
    if not Path(value).is_dir():
        pytest.skip(f"DPEDU_DATA_DIR={value} is not a folder")
    return Path(value)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's) driven by Selenium; skipped, saying why, where it is missing."""
    from browser.chromium import find_chromium, start_chromium

    found = find_chromium()
    if found is None:
        pytest.skip("Chromium/ChromeDriver not found: `apt-get install chromium chromium-driver` (.ci/run does)")
    pytest.importorskip("selenium", reason="selenium is in the test extra: pip install -e '.[test]'")
    session = start_chromium(*found)
    try:
        yield session
    finally:
        session.quit()
