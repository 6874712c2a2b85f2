"""The one progress bar of the course: ``tqdm.auto`` (a widget in Jupyter, text in a terminal).

Set ``TQDM_DISABLE=1`` (CI does) to silence every bar.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress(iterable=None, **kwargs):
    """Wraps ``iterable`` in a ``tqdm.auto`` bar; disabled when ``TQDM_DISABLE`` is set.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    kwargs.setdefault("disable", bool(os.environ.get("TQDM_DISABLE")))
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
