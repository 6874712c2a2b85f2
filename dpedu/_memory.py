"""Keeping a notebook's kernel small: Binder gives 2 GB, and a course notebook trains many models.

glibc keeps memory that a finished computation freed (XLA's compilations free a lot), so a kernel
that runs one training after another grows with every run. :func:`release` hands that memory back.
"""

from __future__ import annotations

import ctypes
import gc


def release(clear_compiled: bool = False) -> None:
    """Returns freed memory to the operating system; a no-op where the C library is not glibc.

    Args:
      clear_compiled: also drop JAX's compiled functions (``jax.clear_caches``): frees their
        memory, at the price of compiling again any function that is called again.
    """
    if clear_compiled:
        import jax

        jax.clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # macOS, Windows, musl: nothing to trim
        pass
