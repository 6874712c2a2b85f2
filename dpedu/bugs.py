"""Three DP-SGD steps that look right and are not: what an audit must catch. Never train with them.

Each has the signature and the claims of :func:`dpedu.dpsgd.make_dp_step` — same arguments, and a
caller would account it with the same ``dpedu.accounting.dp_event(noise_multiplier, q, T)`` — but
breaks one assumption of that accounting:

* :func:`make_step_clipping_kernels_only`: the clip norm is computed and applied over the kernels
  only; biases pass unclipped, so one example can move a bias by any amount (sensitivity ∞).
* :func:`make_step_reusing_noise_key`: the noise key is made once and used in every step, so every
  step adds the SAME noise vector. Each step alone is as noisy as it should be, but consecutive
  released models differ by the clipped gradients alone (the noise cancels).
* :func:`make_step_clipping_each_copy`: with augmentation multiplicity, each of the K copies'
  gradients is clipped to C and the K are summed — sensitivity K·C, not C (De et al. 2022 average the
  copies' gradients and then clip once: :func:`dpedu.clipping.mean_over_copies`).

All three reuse the library's noise (:func:`dpedu.dpsgd.private_gradient`) and
:class:`dpedu.dpsgd.TrainStep`; only the one broken line differs.

Taught in notebooks/06_auditing.ipynb.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from dpedu import clipping, dpsgd
from dpedu._validation import check_noise_multiplier, check_positive


def _dp_finalize(noise_multiplier: float, l2_clip_norm: float, expected_batch_size: float, fixed_key=None):
    def finalize(key, grad_sum, sums):
        gradient = dpsgd.private_gradient(key if fixed_key is None else fixed_key, grad_sum,
                                          noise_multiplier=noise_multiplier, l2_clip_norm=l2_clip_norm,
                                          expected_batch_size=expected_batch_size)
        return gradient, sums
    return finalize


def _checked(l2_clip_norm, noise_multiplier, expected_batch_size):
    return (check_positive("l2_clip_norm", l2_clip_norm), check_noise_multiplier(noise_multiplier),
            check_positive("expected_batch_size", expected_batch_size))


def _masked_sum(per_example, mask):
    mask = jnp.asarray(mask, bool)
    return jax.tree_util.tree_map(
        lambda leaf: jnp.sum(jnp.where(mask.reshape((-1,) + (1,) * (leaf.ndim - 1)), leaf, 0.0), axis=0),
        per_example)


def make_step_clipping_kernels_only(loss_fn, optimizer: optax.GradientTransformation, *, l2_clip_norm: float,
                                    noise_multiplier: float, expected_batch_size: float) -> dpsgd.TrainStep:
    """BROKEN: clips each example's gradient over the leaves named ``kernel`` only.

    Formal guarantees:
        None. The biases' gradients are summed unclipped: the sensitivity is unbounded.

    Taught in notebooks/06_auditing.ipynb.
    """
    l2_clip_norm, noise_multiplier, expected_batch_size = _checked(l2_clip_norm, noise_multiplier,
                                                                   expected_batch_size)

    def is_kernel(path):
        return getattr(path[-1], "key", None) == "kernel"

    def clip_kernels(gradient):
        kernels = {jax.tree_util.keystr(path): leaf
                   for path, leaf in jax.tree_util.tree_leaves_with_path(gradient) if is_kernel(path)}
        clipped, _ = clipping.clip_to_norm(kernels, l2_clip_norm)
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: clipped[jax.tree_util.keystr(path)] if is_kernel(path) else leaf, gradient)

    def batch_grad_sum(params, inputs, labels, mask):
        per_example = jax.vmap(lambda x, y: clip_kernels(jax.grad(loss_fn)(params, x, y)))(inputs, labels)
        return _masked_sum(per_example, mask), {}

    return dpsgd.TrainStep(batch_grad_sum, _dp_finalize(noise_multiplier, l2_clip_norm, expected_batch_size),
                           optimizer)


def make_step_reusing_noise_key(loss_fn, optimizer: optax.GradientTransformation, *, l2_clip_norm: float,
                                noise_multiplier: float, expected_batch_size: float,
                                noise_seed: int = 0) -> dpsgd.TrainStep:
    """BROKEN: one noise key, made once from ``noise_seed``, used in every step.

    Formal guarantees:
        None once more than one model is released: the difference of two consecutive updates is
        the difference of their clipped sums, without noise.

    Taught in notebooks/06_auditing.ipynb.
    """
    l2_clip_norm, noise_multiplier, expected_batch_size = _checked(l2_clip_norm, noise_multiplier,
                                                                   expected_batch_size)

    def batch_grad_sum(params, inputs, labels, mask):
        return dpsgd.clipped_grad_sum(loss_fn, params, inputs, labels, mask, l2_clip_norm)

    fixed_key = jax.random.key(noise_seed)
    return dpsgd.TrainStep(batch_grad_sum,
                           _dp_finalize(noise_multiplier, l2_clip_norm, expected_batch_size, fixed_key), optimizer)


def make_step_clipping_each_copy(loss_fn, optimizer: optax.GradientTransformation, *, l2_clip_norm: float,
                                 noise_multiplier: float, expected_batch_size: float) -> dpsgd.TrainStep:
    """BROKEN: with K augmented copies per example (``inputs`` ``[B, K, ...]``), clips each copy, sums copies.

    Formal guarantees:
        None at the claimed σ: one example moves the sum by up to ``K · C``.

    Taught in notebooks/06_auditing.ipynb.
    """
    l2_clip_norm, noise_multiplier, expected_batch_size = _checked(l2_clip_norm, noise_multiplier,
                                                                   expected_batch_size)

    def example_grad(params, copies, label):
        def copy_grad(copy):
            return clipping.clip_to_norm(jax.grad(loss_fn)(params, copy, label), l2_clip_norm)[0]
        return jax.tree_util.tree_map(lambda leaf: jnp.sum(leaf, axis=0), jax.vmap(copy_grad)(copies))

    def batch_grad_sum(params, inputs, labels, mask):
        per_example = jax.vmap(example_grad, in_axes=(None, 0, 0))(params, inputs, labels)
        return _masked_sum(per_example, mask), {}

    return dpsgd.TrainStep(batch_grad_sum, _dp_finalize(noise_multiplier, l2_clip_norm, expected_batch_size),
                           optimizer)
