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


# Kept for notebook 02's σ exercise and the tests: the smallest σ (to 1 %) with ε ≤ target under PLD,
# by bisection on log σ (ε falls as σ grows).
def noise_multiplier_for(target_epsilon, sampling_rate, steps, delta):
    lo, hi = 0.5, 20.0  # brackets the answer: ε(0.5) > target >= ε(20) in the notebook's setting
    while hi / lo > 1.01:
        mid = (lo * hi) ** 0.5
        if epsilon(mid, sampling_rate, steps, delta, accountant="pld") <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


# Exercise 3a: does example 0's gradient move when the OTHER examples change? Differentiate example
# 0's own loss, computed in a forward pass over the whole batch, then replace examples 1, 2, ... only.
def gradient_moves(apply_fn, params, images, labels):
    def loss_of_example_0(params, images):
        logits = apply_fn(params, images)  # the whole batch at once, as training runs it
        return -jax.nn.log_softmax(logits[0])[labels[0]]

    before = jax.grad(loss_of_example_0)(params, images)
    others_changed = images.at[1:].set(images[1:] * -2.0 + 1.0) if hasattr(images, "at") else \
        np.concatenate([images[:1], images[1:] * -2.0 + 1.0])
    after = jax.grad(loss_of_example_0)(params, others_changed)
    return not all(np.allclose(b, a, rtol=1e-5, atol=1e-6)
                   for b, a in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)))


# Exercise 3b: run the test on every candidate layer.
def mixing_layers_of(candidates):
    return [name for name, (apply_fn, params, images, labels) in candidates.items()
            if gradient_moves(apply_fn, params, images, labels)]


# Exercise 4: shuffled fixed-size batches under replace-one. The replaced example sits in one batch
# per epoch, whose clipped sum moves by up to 2C (old gradient out, new one in); the noise is σC,
# so each epoch is a Gaussian mechanism with noise multiplier σ/2, and E of them compose exactly
# to one Gaussian with noise multiplier σ / (2√E).
def replace_one_epsilon(noise_multiplier, epochs, delta):
    from dpedu.mechanisms import analytic_epsilon

    return analytic_epsilon(noise_multiplier / (2 * epochs ** 0.5), delta)
