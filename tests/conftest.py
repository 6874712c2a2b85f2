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
