"""Test-session defaults shared by unit tests and notebook (nbval) tests.

Notebook kernels inherit this process's environment, so quick mode set here reaches them too.
"""

import copy
import os
import time
from pathlib import Path

import pytest

# CI and the README's test command run every notebook in quick mode unless told otherwise.
os.environ.setdefault("DPEDU_QUICK", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

# --- Executed copies of the notebooks, for slide decks ---------------------------------------
# nbval runs each code cell of a notebook as one test item and keeps what the kernel sent back
# on the item (IPyNbCell.test_outputs). When a notebook's last cell has run, its executed copy is
# written to artifacts/executed/, so decks are built from this very run (tests marked
# ``after_notebooks`` run once every notebook has) instead of executing the notebooks twice.

ROOT = Path(__file__).resolve().parent
EXECUTED_DIR = ROOT / "artifacts" / "executed"
SLIDES_DIR = ROOT / "slides"
_EXECUTED = pytest.StashKey[list]()  # paths of the executed copies written in this session


def pytest_configure(config):
    config.addinivalue_line("markers", "after_notebooks: runs after every notebook (nbval) item")
    config.addinivalue_line("markers", "needs_data: reads the course's data folder ($DPEDU_DATA_DIR); "
                                       "skipped without it (.ci/run runs these again with it)")
    config.stash[_EXECUTED] = []


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared_data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.needs_data)
    later = [item for item in items if item.get_closest_marker("after_notebooks")]
    items[:] = [item for item in items if not item.get_closest_marker("after_notebooks")] + later


def _nbval_cell_class():
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval missing: no notebook items to record
        return None
    return IPyNbCell


def pytest_runtest_teardown(item, nextitem):
    cell_class = _nbval_cell_class()
    if cell_class is None or not isinstance(item, cell_class):
        return
    if nextitem is not None and nextitem.parent is item.parent:
        return  # not the notebook's last cell yet
    import nbformat

    notebook_file = item.parent
    cells = [i for i in item.session.items if isinstance(i, cell_class) and i.parent is notebook_file]
    position = {id(cell): n for n, cell in enumerate(notebook_file.nb.cells)}
    nb = copy.deepcopy(notebook_file.nb)
    for count, cell_item in enumerate(cells, start=1):
        if cell_item.test_outputs is None:  # skipped (nbval-skip): left as committed
            continue
        target = nb.cells[position[id(cell_item.cell)]]
        target.outputs = [nbformat.from_dict(dict(out)) for out in cell_item.test_outputs]
        target.execution_count = count
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    path = EXECUTED_DIR / Path(str(notebook_file.path)).name
    nbformat.write(nb, path)
    item.config.stash[_EXECUTED].append(path)


@pytest.fixture(scope="session")
def executed_notebooks(request):
    """Executed copies written by this session's nbval run (after_notebooks tests only)."""
    paths = list(request.config.stash[_EXECUTED])
    if not paths:
        pytest.skip("no notebook ran in this session: run `python -m pytest` (tests + notebooks/)")
    return paths


@pytest.fixture(scope="session")
def session_decks(executed_notebooks):
    """Builds ``slides/NN_name.slides.html`` from this session's executed notebooks, once."""
    from dpedu import slides

    start = time.perf_counter()
    decks = slides.build_decks(executed_notebooks, SLIDES_DIR)
    print(f"\nbuilt {len(decks)} slide decks in {time.perf_counter() - start:.1f} s")
    return dict(zip(executed_notebooks, decks))
