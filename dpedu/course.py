"""The course's one source of truth for where it lives: repository, notebooks, Colab/Binder links.

README badges and each notebook's first (Colab setup) cell are checked against this module by
``tests/test_course.py``.

Colab copies only the notebook, so its setup cell installs the library from the repository, and
it installs it from ONE commit, named by its full hash (:data:`LIBRARY_COMMIT`). A commit hash
names content: whoever controls the address, pip can only ever get that commit's code, or fail
(the cell then stops the notebook). The pinned commit must hold the same library as the
notebooks' commit (``tests/test_course.py`` checks ``dpedu/`` is unchanged since it, but for this
file); after changing the library, commit, then run ``python -m dpedu.course pin`` and commit the
re-pinned setup cells.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = "dpedu/dpedu"  # GitHub owner/name of the course
BRANCH = "main"  # what the Colab and Binder badges open (notebooks and library of one commit on Binder)
# The commit Colab installs the library from (``python -m dpedu.course pin`` sets it to HEAD).
LIBRARY_COMMIT = "a2987e5cf4332ba4abb75b28e08a05c0933986e9"

NOTEBOOKS = (
    ("01_gaussian_mechanism.ipynb", "The Gaussian mechanism: definition, calibration, privacy loss, hypothesis tests"),
    ("02_composition_accounting.ipynb", "Composition and accounting: naive, strong, amplification, moments, RDP, PLD"),
    ("03_dpsgd_mnist.ipynb", "DP-SGD on MNIST: per-example clipping, Poisson sampling, Abadi et al.'s table"),
    ("04_cifar10_ladder.ipynb", "The CIFAR-10 ablation ladder of De et al. 2022"),
    ("05_reconstruction_attack.ipynb", "Reconstructing training data (Balle, Cherubin & Hayes 2022) and how DP stops it"),
    ("06_auditing.ipynb", "Auditing DP-SGD: membership inference (LiRA), lower bounds on ε, catching bugs"),
)

GITHUB_URL = f"https://github.com/{REPOSITORY}"
# The core library only: Colab has its own Jupyter, widgets, jax and scikit-learn, and reinstalling
# them breaks its runtime.
PIP_SPEC = f"dpedu @ git+{GITHUB_URL}@{LIBRARY_COMMIT}"


def colab_url(notebook: str) -> str:
    """Opens ``notebooks/<notebook>`` from the repository in Google Colab."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/notebooks/{notebook}"


def binder_url() -> str:
    """Launches JupyterLab on the notebooks folder at mybinder.org."""
    return f"https://mybinder.org/v2/gh/{REPOSITORY}/{BRANCH}?urlpath=lab/tree/notebooks"


def colab_setup_cell() -> str:
    """The source of every notebook's first code cell: on Colab, installs the pinned library.

    Locally, on Binder and in CI the package is already installed and the cell does nothing. On
    Colab a failed install, or an installed package that is not the pinned commit, stops the
    notebook with an error saying what to do, instead of a confusing ``ModuleNotFoundError`` later.
    """
    return f"""# On Colab, install the course library (Colab copies only this notebook), pinned to one commit.
import sys
if "google.colab" in sys.modules:
    import json, subprocess
    from importlib import metadata
    DPEDU = "{PIP_SPEC}"
    if subprocess.run([sys.executable, "-m", "pip", "install", "-q", DPEDU]).returncode != 0:
        raise RuntimeError(f"Could not install the course library ({{DPEDU}}): check the internet "
                           "connection (Runtime > Restart session), then run this cell again.")
    installed = json.loads(metadata.distribution("dpedu").read_text("direct_url.json") or "{{}}")
    if installed.get("vcs_info", {{}}).get("commit_id") != "{LIBRARY_COMMIT}":
        raise RuntimeError("Another dpedu is installed; run !pip uninstall -y dpedu, then this cell again.")
"""


PARAMETERS_CELL = (
    "import os\n"
    "# Quick mode (CI, Binder) runs in a minute or two on 2 CPU cores; full mode reproduces the papers.\n"
    "QUICK = os.environ.get(\"DPEDU_QUICK\", \"0\") == \"1\"\n"
)


def badges(notebook: str) -> str:
    """The Colab and Binder badges for ``notebook``, as one Markdown line."""
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)}) "
        f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder_url()})"
    )


def header_cells(notebook: str, title: str, intro: str, parameters: str = ""):
    """The three header cells every notebook starts with (see docs/NOTEBOOKS.md).

    ``parameters`` is appended to the papermill ``parameters`` cell (notebook-specific settings
    derived from ``QUICK``).
    """
    import nbformat.v4 as nbf

    number = notebook.split("_", 1)[0]
    title_cell = nbf.new_markdown_cell(f"# {number} · {title}\n\n{badges(notebook)}\n\n{intro}")
    title_cell.metadata["slideshow"] = {"slide_type": "slide"}
    setup = nbf.new_code_cell(colab_setup_cell())
    setup.metadata.update({"slideshow": {"slide_type": "skip"}, "tags": ["setup"]})
    params = nbf.new_code_cell(PARAMETERS_CELL + parameters)
    params.metadata.update({"slideshow": {"slide_type": "skip"}, "tags": ["parameters"]})
    return [title_cell, setup, params]


def pin(root: str | Path | None = None) -> str:
    """Pins Colab's install to the checkout's HEAD: rewrites :data:`LIBRARY_COMMIT` here and every
    notebook's setup cell. The working tree must be clean (the pin must name committed code).

    Returns the pinned commit.
    """
    import nbformat

    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    git = ["git", "-C", str(root)]
    if subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                      text=True, check=True).stdout.strip():
        raise RuntimeError("commit your changes first: the pin must name committed code")
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    module = root / "dpedu" / "course.py"
    module.write_text(re.sub(r'^LIBRARY_COMMIT = "[0-9a-f]{40}"$', f'LIBRARY_COMMIT = "{commit}"',
                             module.read_text(), count=1, flags=re.M))
    global LIBRARY_COMMIT, PIP_SPEC
    LIBRARY_COMMIT, PIP_SPEC = commit, f"dpedu @ git+{GITHUB_URL}@{commit}"
    for name, _ in NOTEBOOKS:
        path = root / "notebooks" / name
        nb = nbformat.read(path, as_version=4)
        setup = next(cell for cell in nb.cells if "setup" in cell.metadata.get("tags", []))
        setup.source = colab_setup_cell()
        nbformat.write(nb, path)
    return commit


if __name__ == "__main__":
    if sys.argv[1:] != ["pin"]:
        sys.exit("usage: python -m dpedu.course pin")
    print(f"pinned Colab's install to {pin()}; commit dpedu/course.py and notebooks/")
