"""Parameter averaging: an exponential moving average (EMA) of the DP-SGD iterates.

De et al. 2022, "Unlocking High-Accuracy Differentially Private Image Classification through
Scale" (parameter averaging): evaluate an EMA of the parameters, decay 0.9999 for their
CIFAR-10 runs, with the warm-up of their released jax_privacy code
(``averaging.ema``): the decay at update ``t`` (counted from 0) is
``min(decay, (1 + t) / (10 + t))``, so early averages are not dominated by the random
initialisation.

Averaging is post-processing of the privatised iterates: it costs NO extra privacy.

Taught in notebooks/04_cifar10_ladder.ipynb.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp

from dpedu._validation import check_non_negative

PyTree = Any


def ema_init(params: PyTree) -> PyTree:
    """The initial average: a copy of ``params``.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    return jax.tree_util.tree_map(jnp.array, params)


def ema_update(average: PyTree, params: PyTree, step, decay: float = 0.9999, *, warmup: bool = True) -> PyTree:
    """One EMA update: ``average ← μ · average + (1 - μ) · params``.

    De et al. 2022 (parameter averaging); ``μ = min(decay, (1 + step) / (10 + step))`` with
    ``warmup`` (their jax_privacy code), else ``μ = decay``.

    Formal guarantees:
        A function of the (already private) iterates only: post-processing, no privacy cost.

    Edge cases: ``decay == 0`` returns ``params``; with ``warmup``, ``step == 0`` uses
    ``μ = 0.1``.

    Args:
        average: the current average (from :func:`ema_init` or a previous update).
        params: the parameters after update number ``step``.
        step: update counter ``t >= 0`` (Python int or an integer array inside ``jit``).
        decay: ``μ`` in ``[0, 1)``.
        warmup: use ``min(decay, (1 + t) / (10 + t))``.

    Returns:
        The new average, same structure as ``params``.

    Raises:
        ValueError: ``decay`` outside ``[0, 1)`` or ``step < 0`` (unless JAX arrays).

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    # JAX arrays (possibly traced inside jit) cannot be checked here; anything else is.
    if not isinstance(decay, jax.Array) and (
        isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 <= decay < 1
    ):
        raise ValueError(f"decay must be in [0, 1), got {decay!r}")
    if not isinstance(step, jax.Array):
        check_non_negative("step", step)
    mu = jnp.asarray(decay, dtype=jnp.float32)
    if warmup:
        mu = jnp.minimum(mu, (1.0 + step) / (10.0 + step))
    return jax.tree_util.tree_map(
        lambda avg, new: (mu * avg + (1.0 - mu) * new).astype(jnp.result_type(avg)), average, params
    )
