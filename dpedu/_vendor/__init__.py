"""Browser files shipped inside dpedu, so slide decks and the course book need no Node.js/npm and
no network: reveal.js and MathJax, copied unchanged from their npm packages.

``README.md`` in this folder records where every file came from (package, version, the npm
tarball's SHA-512 integrity) and its SHA-256; ``tests/test_vendor.py`` checks the files against it.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

# name -> (version, SHA-512 integrity of the npm tarball the files were taken from).
PACKAGES = {
    "reveal.js": (
        "5.2.1",
        "sha512-r7//6mIM5p34hFiDMvYfXgyjXqGRta+/psd9YtytsgRlrpRzFv4RbH76TXd2qD+7ZPZEbpBDhdRhJaFgfQ7zNQ==",
    ),
    "mathjax": (
        "3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
    ),
}


def copy_package(name: str, dest: str | os.PathLike) -> Path:
    """Copies the vendored files of ``name`` (a key of ``PACKAGES``) into folder ``dest``.

    Works from an installed wheel or zip too (importlib.resources). Existing files are replaced.

    Raises:
      ValueError: ``name`` is not vendored.
      FileNotFoundError: the files are missing from this dpedu install (reinstall dpedu).
    """
    if name not in PACKAGES:
        raise ValueError(f"name must be one of {sorted(PACKAGES)}, got {name!r}")
    source = files(__name__) / name
    if not source.is_dir():
        raise FileNotFoundError(f"{name} is missing from this dpedu install ({source}); reinstall dpedu")
    dest = Path(dest)
    _copy_tree(source, dest)
    return dest


def _copy_tree(source, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            _copy_tree(entry, dest / entry.name)
        else:
            (dest / entry.name).write_bytes(entry.read_bytes())
