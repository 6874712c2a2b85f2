"""dpedu._memory.release: freed memory back to the OS, compiled functions dropped on request."""

import jax
import jax.numpy as jnp

from dpedu import _memory


def test_release_keeps_compiled_functions_unless_asked():
    square = jax.jit(lambda x: x * x)
    square(jnp.ones(3))
    _memory.release()
    assert square._cache_size() == 1
    _memory.release(clear_compiled=True)
    assert square._cache_size() == 0
    assert float(square(jnp.float32(3.0))) == 9.0  # compiles again when called again
