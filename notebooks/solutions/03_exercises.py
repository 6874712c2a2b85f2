"""Solutions to the exercises of notebooks/03_dpsgd_mnist.ipynb.

Try them yourself first. ``tests/test_exercises.py`` checks each solution with the notebook's
checker (``dpedu.exercises``).
"""

import jax
import jax.numpy as jnp
import numpy as np

from dpedu.accounting import epsilon


# Exercise 1: clip one example's gradient (a pytree) to global l2 norm C.
def clip_gradient(grad, l2_clip_norm):
    norm = jnp.sqrt(sum(jnp.sum(leaf ** 2) for leaf in jax.tree_util.tree_leaves(grad)))
    # Scale only when the norm exceeds C; the `where` keeps a zero gradient from dividing by 0.
    factor = jnp.where(norm > l2_clip_norm, l2_clip_norm / jnp.where(norm > 0, norm, 1.0), 1.0)
    return jax.tree_util.tree_map(lambda leaf: leaf * factor, grad)


# Exercise 2: Poisson sampling: every example joins the batch independently with probability q.
def poisson_sample(rng, num_examples, sampling_rate):
    return np.flatnonzero(rng.random(num_examples) < sampling_rate)


# Exercise 3: the smallest σ (to 1 %) with ε ≤ target, by bisection on log σ (ε falls as σ grows).
def noise_multiplier_for(target_epsilon, sampling_rate, steps, delta):
    lo, hi = 0.5, 20.0  # brackets the answer: ε(0.5) > target >= ε(20) in the notebook's setting
    while hi / lo > 1.01:
        mid = (lo * hi) ** 0.5
        if epsilon(mid, sampling_rate, steps, delta, accountant="pld") <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi
