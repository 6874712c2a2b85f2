"""The course's links, header cells and install paths agree with dpedu.course (the one source)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import Requirement

from dpedu import course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
PRESENT = [name for name, _ in course.NOTEBOOKS if (NOTEBOOK_DIR / name).exists()]


def test_notebook_folder_matches_course_list():
    on_disk = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert set(on_disk) <= {name for name, _ in course.NOTEBOOKS}, "add new notebooks to dpedu/course.py"
    assert on_disk == sorted(on_disk), "notebooks are numbered in teaching order"


def test_readme_links_every_notebook_with_its_colab_badge_and_binder():
    readme = (ROOT / "README.md").read_text()
    for name, _ in course.NOTEBOOKS:
        assert course.colab_url(name) in readme
        assert f"(notebooks/{name})" in readme
    assert course.binder_url() in readme
    # Every Colab/Binder link in the README points at this repository.
    for url in re.findall(r"https://(?:colab\.research\.google\.com|mybinder\.org)/[^)\s]+", readme):
        if "assets" in url or "badge_logo" in url:
            continue
        assert course.REPOSITORY in url, url


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_cmd = next(b for b in blocks if "pytest" in b)
    # The README installs into .venv and runs pytest from it; CI activates .venv, then runs pytest.
    assert test_cmd.split("&&")[-1].strip().replace(".venv/bin/", "") in ci
    assert '.[test]' in test_cmd and '".[test]"' in ci


@pytest.mark.parametrize("name", PRESENT)
def test_notebook_starts_with_the_course_header(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    title, setup, params = nb.cells[:3]
    assert title.cell_type == "markdown" and course.badges(name) in title.source
    assert setup.cell_type == "code" and setup.source == course.colab_setup_cell()
    assert "setup" in setup.metadata.get("tags", [])
    assert params.cell_type == "code" and params.source.startswith(course.PARAMETERS_CELL)
    assert "parameters" in params.metadata.get("tags", [])


@pytest.mark.parametrize("name", PRESENT)
def test_notebook_is_committed_without_outputs_and_with_slide_metadata(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    for cell in nb.cells:
        assert "slide_type" in cell.metadata.get("slideshow", {}), cell.source[:60]
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, cell.source[:60]


def _run_setup_cell(on_colab: bool, monkeypatch) -> list[str]:
    """Executes the Colab setup cell as IPython would, recording shell commands instead of running them."""
    import sys
    import types

    calls: list[str] = []
    shell = types.SimpleNamespace(system=calls.append)
    code = TransformerManager().transform_cell(course.colab_setup_cell())
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(code, {"get_ipython": lambda: shell})
    return calls


def test_colab_setup_installs_from_the_repository_only_on_colab(monkeypatch):
    assert _run_setup_cell(on_colab=False, monkeypatch=monkeypatch) == []
    (cmd,) = _run_setup_cell(on_colab=True, monkeypatch=monkeypatch)
    args = shlex.split(cmd)
    assert args[:3] == ["pip", "install", "-q"]
    assert args[3] == course.PIP_SPEC and course.GITHUB_URL in args[3]


def _binder_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "binder" / "environment.yml").read_text().splitlines():
        m = re.match(r"\s*-\s*([A-Za-z0-9_.-]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_binder_pins_satisfy_the_package_lower_bounds():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["notebooks"]]
    pins = _binder_pins()
    for req in wanted:
        key = req.name.lower().replace("_", "-")
        assert key in pins, f"binder/environment.yml must pin {req.name}"
        assert req.specifier.contains(pins[key]), f"{req.name}=={pins[key]} violates {req.specifier}"
    postbuild = (ROOT / "binder" / "postBuild").read_text()
    assert "set -euo pipefail" in postbuild and "pip install --no-deps -e ." in postbuild


def test_binder_start_runs_notebooks_in_quick_mode_unless_told_otherwise():
    import os
    import subprocess

    start = ROOT / "binder" / "start"
    env = {k: v for k, v in os.environ.items() if k != "DPEDU_QUICK"}
    show = ["bash", str(start), "sh", "-c", 'printf %s "$DPEDU_QUICK"']
    assert subprocess.run(show, env=env, capture_output=True, text=True, timeout=30).stdout == "1"
    env["DPEDU_QUICK"] = "0"  # a user who asks for full mode gets it
    assert subprocess.run(show, env=env, capture_output=True, text=True, timeout=30).stdout == "0"


def test_binder_environment_renders_widgets_in_jupyterlab():
    from packaging.version import Version

    pins = _binder_pins()
    # JupyterLab 4 renders ipywidgets 8 (its jupyterlab_widgets 3 comes as a dependency).
    assert Version(pins["jupyterlab"]).major >= 4 and Version(pins["ipywidgets"]).major >= 8


def test_binder_badge_opens_jupyterlab_on_the_notebooks_folder():
    from urllib.parse import parse_qs, urlparse

    url = urlparse(course.binder_url())
    assert (url.scheme, url.netloc) == ("https", "mybinder.org")
    assert url.path == f"/v2/gh/{course.REPOSITORY}/{course.REF}"
    (urlpath,) = parse_qs(url.query)["urlpath"]
    assert urlpath == "lab/tree/notebooks" and NOTEBOOK_DIR.is_dir()
    readme = (ROOT / "README.md").read_text()
    assert f"[![Binder](https://mybinder.org/badge_logo.svg)]({course.binder_url()})" in readme


def test_colab_install_names_an_extra_the_package_defines():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    req = Requirement(course.PIP_SPEC)
    assert req.name == "dpedu" and req.extras <= set(extras)
    assert req.url == f"git+{course.GITHUB_URL}@{course.REF}"
