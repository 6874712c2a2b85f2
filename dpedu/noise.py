"""Gaussian noise on a pytree: the Gaussian mechanism's randomness, on device.

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dpedu._validation import check_non_negative

PyTree = Any


def add_gaussian_noise(key: jax.Array, tree: PyTree, stddev) -> PyTree:
    """Adds independent ``N(0, stddev²)`` noise to every coordinate of ``tree``.

    The Gaussian mechanism (Dwork & Roth 2014, Thm A.1; Abadi et al. 2016, Algorithm 1, "Add
    noise": ``g̃ = Σ ḡᵢ + N(0, σ²C²I)``) applied to a whole pytree: every coordinate of every leaf
    gets its own independent standard normal (one draw of all coordinates, cut into leaves), so no
    two coordinates or leaves share noise.

    Formal guarantees:
        If ``tree`` has l2 sensitivity ``Δ`` (e.g. a sum of gradients clipped to ``Δ``, under
        adding/removing one example), the output is the Gaussian mechanism with noise multiplier
        ``stddev / Δ``; its privacy is computed by :mod:`dpedu.accounting` from that ratio. This
        holds only if ``key`` is never reused: reusing it reuses the noise, and the difference of
        two outputs then reveals the data exactly.

    Edge cases:

        ==================  ===========================================
        input               output
        ==================  ===========================================
        ``stddev == 0``     ``tree`` unchanged (no privacy)
        empty tree          empty tree
        integer leaves      not supported (noise is drawn in the leaf's float dtype)
        ==================  ===========================================

    Args:
        key: a JAX PRNG key, used once.
        tree: a pytree of float arrays.
        stddev: noise standard deviation ``σC`` in ``[0, inf)`` (a Python number, or an array
            inside ``jit``).

    Returns:
        A pytree of the same structure, shapes and dtypes.

    Raises:
        ValueError: ``stddev`` is a number outside ``[0, inf)``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    if not isinstance(stddev, jax.Array):  # traced values cannot be checked
        stddev = check_non_negative("stddev", stddev)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if not leaves:
        return tree
    # ONE draw of all coordinates, cut into leaves: the coordinates are i.i.d., so each leaf gets
    # independent noise, and XLA compiles one generator instead of one per leaf (compiling the
    # threefry generator is slow on CPU: seconds per leaf for a CNN).
    sizes = [int(np.size(leaf)) for leaf in leaves]
    flat = jax.random.normal(key, (sum(sizes),), jnp.result_type(*leaves))
    pieces = jnp.split(flat, np.cumsum(sizes)[:-1])
    noisy = [
        leaf + (stddev * piece.reshape(jnp.shape(leaf))).astype(jnp.result_type(leaf))
        for leaf, piece in zip(leaves, pieces)
    ]
    return jax.tree_util.tree_unflatten(treedef, noisy)
