"""The course's one source of truth for where it lives: repository, notebooks, Colab/Binder links.

README badges and each notebook's first (Colab setup) cell are checked against this module by
``tests/test_course.py``.
"""

from __future__ import annotations

REPOSITORY = "dpedu/dpedu"  # GitHub owner/name
REF = "main"  # branch or release tag that Colab installs from and Binder builds

NOTEBOOKS = (
    ("01_gaussian_mechanism.ipynb", "The Gaussian mechanism: definition, calibration, privacy loss, hypothesis tests"),
    ("02_composition_accounting.ipynb", "Composition and accounting: naive, strong, amplification, moments, RDP, PLD"),
    ("03_dpsgd_mnist.ipynb", "DP-SGD on MNIST: per-example clipping, Poisson sampling, Abadi et al.'s table"),
    ("04_cifar10_ladder.ipynb", "The CIFAR-10 ablation ladder of De et al. 2022"),
    ("05_reconstruction_attack.ipynb", "Reconstructing training data (Balle, Cherubin & Hayes 2022) and how DP stops it"),
)

GITHUB_URL = f"https://github.com/{REPOSITORY}"
PIP_SPEC = f"dpedu[notebooks] @ git+{GITHUB_URL}@{REF}"


def colab_url(notebook: str) -> str:
    """Opens ``notebooks/<notebook>`` from the repository in Google Colab."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{REF}/notebooks/{notebook}"


def binder_url() -> str:
    """Launches JupyterLab on the notebooks folder at mybinder.org."""
    return f"https://mybinder.org/v2/gh/{REPOSITORY}/{REF}?urlpath=lab/tree/notebooks"


def colab_setup_cell() -> str:
    """The source of every notebook's first code cell: installs dpedu on Colab, nothing elsewhere.

    Colab copies only the notebook, so the library must come from the repository; locally, on
    Binder and in CI the package is already installed and the cell is a no-op.
    """
    return (
        "# On Colab, install the course library (Colab copies only this notebook).\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    !pip install -q \"{PIP_SPEC}\"\n"
    )


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
