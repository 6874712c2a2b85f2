"""The browser files shipped in dpedu/_vendor/: each matches the SHA-256 its README records, the
README names the pinned versions, and pyproject.toml ships every file in the wheel."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from dpedu import _vendor

VENDOR = Path(_vendor.__file__).resolve().parent
ROOT = Path(__file__).resolve().parents[1]
NOT_VENDORED = {"README.md", "__init__.py"}  # dpedu's own files in the folder


def vendored_files() -> set[str]:
    return {
        p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*")
        if p.is_file() and p.name not in NOT_VENDORED and "__pycache__" not in p.parts
    }


def recorded_hashes() -> dict[str, str]:
    """``file -> sha256`` from the README's table rows ``| `path` | bytes | `hex` |``."""
    rows = re.findall(r"^\| `([^`]+)` \| [\d,]+ \| `([0-9a-f]{64})` \|$",
                      (VENDOR / "README.md").read_text(encoding="utf-8"), flags=re.M)
    return dict(rows)


def test_every_vendored_file_matches_its_recorded_sha256():
    recorded = recorded_hashes()
    assert recorded, "no SHA-256 table in dpedu/_vendor/README.md"
    assert vendored_files() == set(recorded), "files and the README's table differ"
    for rel, digest in recorded.items():
        assert hashlib.sha256((VENDOR / rel).read_bytes()).hexdigest() == digest, rel


def test_readme_names_the_pinned_versions_and_licences_ship():
    readme = (VENDOR / "README.md").read_text(encoding="utf-8")
    for name, (version, integrity) in _vendor.PACKAGES.items():
        assert (VENDOR / name / "LICENSE").is_file()
        assert f"| {version} |" in readme and integrity in readme, name
        assert any(rel.startswith(f"{name}/") for rel in vendored_files())
    # The version reveal.js reports (checked again in the browser, Reveal.VERSION) is the pinned one.
    assert f'"{_vendor.PACKAGES["reveal.js"][0]}"' in (VENDOR / "reveal.js" / "dist" / "reveal.js").read_text()


def test_pyproject_ships_every_vendored_file():
    """setuptools globs package-data patterns relative to the package folder (recursive ``**``)."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["dpedu._vendor"]
    shipped = {p.relative_to(VENDOR).as_posix() for pattern in patterns for p in VENDOR.glob(pattern) if p.is_file()}
    assert vendored_files() | {"README.md"} <= shipped


def test_copy_package(tmp_path):
    copied = _vendor.copy_package("mathjax", tmp_path / "mj")
    assert (copied / "es5" / "tex-svg-full.js").read_bytes() == (VENDOR / "mathjax" / "es5" / "tex-svg-full.js").read_bytes()
    with pytest.raises(ValueError, match="name must be one of"):
        _vendor.copy_package("jquery", tmp_path)
