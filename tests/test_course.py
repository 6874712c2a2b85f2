"""The course's links, header cells and install paths agree with dpedu.course (the one source)."""

from __future__ import annotations

import re
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


def _run_setup_cell(monkeypatch, *, on_colab: bool, pip_returncode: int = 0,
                    installed_commit: str | None = None) -> list[list[str]]:
    """Executes the Colab setup cell, recording the commands it runs instead of running them."""
    import importlib.metadata
    import json
    import subprocess
    import sys
    import types

    calls: list[list[str]] = []

    def fake_run(args, *unused_args, **unused_kwargs):
        calls.append(list(args))
        return subprocess.CompletedProcess(args, pip_returncode)

    class FakeDistribution:
        def read_text(self, name):
            assert name == "direct_url.json"
            return json.dumps({"url": course.GITHUB_URL, "vcs_info": {
                "vcs": "git", "commit_id": installed_commit or course.LIBRARY_COMMIT}})

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: FakeDistribution())
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    code = TransformerManager().transform_cell(course.colab_setup_cell())
    exec(code, {})
    return calls


def test_colab_setup_installs_the_pinned_commit_only_on_colab(monkeypatch):
    import sys

    assert _run_setup_cell(monkeypatch, on_colab=False) == []
    (args,) = _run_setup_cell(monkeypatch, on_colab=True)
    assert args == [sys.executable, "-m", "pip", "install", "-q", course.PIP_SPEC]
    req = Requirement(course.PIP_SPEC)
    # The core library alone (no extras fighting Colab's own stack), at a full commit hash: content
    # that no other owner of the address can substitute.
    assert req.name == "dpedu" and not req.extras
    assert req.url == f"git+{course.GITHUB_URL}@{course.LIBRARY_COMMIT}"
    assert re.fullmatch(r"[0-9a-f]{40}", course.LIBRARY_COMMIT)


def test_colab_setup_stops_the_notebook_when_the_install_fails(monkeypatch):
    with pytest.raises(RuntimeError, match="Could not install the course library.*run this cell again"):
        _run_setup_cell(monkeypatch, on_colab=True, pip_returncode=1)


def test_colab_setup_stops_when_another_dpedu_is_installed(monkeypatch):
    with pytest.raises(RuntimeError, match="Another dpedu is installed"):
        _run_setup_cell(monkeypatch, on_colab=True, installed_commit="f" * 40)


def test_pinned_commit_holds_the_library_of_this_checkout():
    """Colab students get the library of LIBRARY_COMMIT with the notebooks of this checkout: the two
    must agree (only dpedu/course.py, which holds the pin, may differ)."""
    import subprocess

    git = ["git", "-C", str(ROOT)]
    try:
        known = subprocess.run([*git, "cat-file", "-e", f"{course.LIBRARY_COMMIT}^{{commit}}"],
                               capture_output=True, timeout=30).returncode == 0
    except OSError:
        pytest.skip("git is not installed")
    if not known:
        if not (ROOT / ".git").exists() or subprocess.run(
                [*git, "rev-parse", "--is-shallow-repository"], capture_output=True, text=True).stdout.strip() == "true":
            pytest.skip("not a full git clone: the pinned commit cannot be looked up")
        pytest.fail(f"LIBRARY_COMMIT {course.LIBRARY_COMMIT} is not in this repository's history: "
                    "commit, then run `python -m dpedu.course pin` and commit again")
    changed = subprocess.run([*git, "diff", "--name-only", course.LIBRARY_COMMIT, "--", "dpedu", "pyproject.toml"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert [path for path in changed if path != "dpedu/course.py"] == [], (
        "the library changed since the commit Colab installs: commit, then run "
        "`python -m dpedu.course pin` and commit the re-pinned notebooks")


BINDER = ROOT / "binder"
# What repo2docker installs itself, in the env the kernel runs in: never in Binder's lock.
JUPYTER_SERVER_STACK = {"jupyterlab", "notebook", "jupyter-server", "ipykernel"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _binder_lock() -> dict[str, tuple[str, list[str]]]:
    """binder/requirements.txt as {name: (version, hashes)}; fails on any line that is not `name==version --hash…`."""
    text = (BINDER / "requirements.txt").read_text()
    lock = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        req = Requirement(spec)
        (pin,) = req.specifier
        assert pin.operator == "==" and "*" not in pin.version, f"not pinned exactly: {line[:80]}"
        assert not req.url and not req.extras and req.marker is None, spec
        assert options and all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", o) for o in options), spec
        assert _canonical(req.name) not in lock, f"{req.name} locked twice"
        lock[_canonical(req.name)] = (pin.version, options)
    return lock


def _pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a constraints file (comments and blank lines skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_canonical(name)] = version
    return pins


def test_binder_lock_pins_every_package_with_hashes_and_says_how_it_was_made():
    lock = _binder_lock()
    assert {"jax", "jaxlib", "ml-dtypes", "flax", "optax", "numpy", "attrs"} <= set(lock)  # indirect ones too
    header = (BINDER / "requirements.txt").read_text().split("\n", 2)[1]
    command = header.lstrip("# ").split()
    assert command[:5] == ["uv", "pip", "compile", "pyproject.toml", "binder/requirements.in"], header
    for option in ("-c binder/server-constraints.txt", "--generate-hashes", "-o binder/requirements.txt",
                   "--python-version 3.11", "--python-platform x86_64-manylinux_2_28"):
        assert option in header, f"the lock's header must show how to regenerate it: {option}"
    readme = (BINDER / "README.md").read_text()
    assert "uv pip compile pyproject.toml binder/requirements.in" in readme and "--generate-hashes" in readme


def test_binder_lock_satisfies_the_package_lower_bounds():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    binder_in = [line.split("#", 1)[0].strip() for line in (BINDER / "requirements.in").read_text().splitlines()]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["notebooks"]
              + [r for r in binder_in if r]]
    lock = _binder_lock()
    for req in wanted:
        key = _canonical(req.name)
        if key in JUPYTER_SERVER_STACK:
            continue  # repo2docker's
        assert key in lock, f"binder/requirements.txt must lock {req.name}: regenerate it (binder/README.md)"
        assert req.specifier.contains(lock[key][0]), f"{req.name}=={lock[key][0]} violates {req.specifier}"


def test_binder_lock_leaves_the_jupyter_server_to_repo2docker():
    import tomllib

    from packaging.specifiers import SpecifierSet

    lock = _binder_lock()
    assert not JUPYTER_SERVER_STACK & set(lock), "repo2docker installs the Jupyter server stack itself"
    # repo2docker would build from an environment.yml and then ignore requirements.txt and runtime.txt.
    assert not list(BINDER.glob("environment.y*ml")) and not (BINDER / "Dockerfile").exists()
    python = (BINDER / "runtime.txt").read_text().strip()
    assert python == "python-3.11" and "--python-version 3.11" in (BINDER / "requirements.txt").read_text()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains("3.11")
    # Packages the server env already has stay at repo2docker's versions, so pip leaves them alone.
    server = _pins(BINDER / "server-constraints.txt")
    assert {"jupyterlab", "notebook", "ipykernel", "ipython", "traitlets", "tornado"} <= set(server)
    for name in set(lock) & set(server):
        assert lock[name][0] == server[name], f"{name}: lock {lock[name][0]}, repo2docker {server[name]}"


def test_binder_postbuild_installs_the_repository_and_downloads_mnist():
    import subprocess

    postbuild = BINDER / "postBuild"
    lines = [line.strip() for line in postbuild.read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    # repo2docker does not stop on a failing postBuild by itself.
    assert commands[0] == "set -euo pipefail"
    assert "python -m pip install --no-deps -e ." in commands  # its dependencies come from the lock
    assert "dpedu data download mnist" in commands
    assert commands.index("dpedu data download mnist") > commands.index("python -m pip install --no-deps -e .")
    assert lines[0] == "#!/usr/bin/env bash" and postbuild.stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(postbuild)], timeout=30).returncode == 0


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

    lock, server = _binder_lock(), _pins(BINDER / "server-constraints.txt")
    # JupyterLab 4 (repo2docker's) renders ipywidgets 8 through jupyterlab_widgets 3.
    assert Version(server["jupyterlab"]).major >= 4 and Version(lock["ipywidgets"][0]).major >= 8
    assert Version(lock["jupyterlab-widgets"][0]).major == 3


def test_binder_badge_opens_jupyterlab_on_the_notebooks_folder():
    from urllib.parse import parse_qs, urlparse

    url = urlparse(course.binder_url())
    assert (url.scheme, url.netloc) == ("https", "mybinder.org")
    assert url.path == f"/v2/gh/{course.REPOSITORY}/{course.BRANCH}"
    (urlpath,) = parse_qs(url.query)["urlpath"]
    assert urlpath == "lab/tree/notebooks" and NOTEBOOK_DIR.is_dir()
    readme = (ROOT / "README.md").read_text()
    assert f"[![Binder](https://mybinder.org/badge_logo.svg)]({course.binder_url()})" in readme




GPU_NOTEBOOKS = ("03_dpsgd_mnist.ipynb", "04_cifar10_ladder.ipynb")  # full mode trains networks


@pytest.mark.parametrize("name", GPU_NOTEBOOKS)
def test_gpu_notebooks_ask_colab_for_a_gpu_and_say_how(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    assert nb.metadata.get("accelerator") == "GPU" and nb.metadata.get("colab", {}).get("gpuType")
    assert "Runtime → Change runtime type" in nb.cells[0].source


def test_readme_run_time_table_is_made_from_the_records():
    from dpedu import provenance
    from dpedu.experiments import notebooks as timing

    table = timing.readme_table(provenance.load_record("notebooks_quick.json"),
                                provenance.load_record("notebooks_full.json"))
    assert table in (ROOT / "README.md").read_text(), (
        "regenerate the README's run-time table: python -m dpedu.experiments.notebooks --readme")


def test_project_urls_point_at_the_course_repository():
    import tomllib

    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert all(url.startswith(course.GITHUB_URL) for url in urls.values())
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_every_notebook_fits_binders_memory_in_quick_mode():
    """Binder gives 2 GB; the issue's budget is 1.5 GB per notebook (read as 1,500 MiB, the stricter)."""
    from dpedu import provenance

    record = provenance.load_record("notebooks_quick.json")
    assert record is not None and record["mode"] == "quick"
    assert record["environment"]["DPEDU_DATA_DIR"] is None  # measured as a newcomer runs it
    assert {r["notebook"] for r in record["notebooks"]} == {name for name, _ in course.NOTEBOOKS}
    for run in record["notebooks"]:
        assert run["peak_memory_mb"] <= 1500, run
