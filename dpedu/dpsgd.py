"""The DP-SGD gradient and a ready-made, jitted training step for any optax optimiser.

Abadi et al. 2016, "Deep Learning with Differential Privacy", Algorithm 1, for one step:

1. sample a batch ("lot") with Poisson sampling, rate ``q`` (:mod:`dpedu.sampling`, host);
2. per example, compute the gradient and clip it to l2 norm ``C`` (:mod:`dpedu.clipping`);
3. sum the clipped gradients, add ``N(0, σ²C²I)`` ONCE (:mod:`dpedu.noise`);
4. divide by the EXPECTED batch size ``qN`` — a public constant — never by the realised size,
   which depends on who was sampled (jax_privacy's guide lists it as a shortcut to avoid);
5. hand the result to the optimiser (post-processing: no further privacy cost).

With augmentation multiplicity (De et al. 2022, §3.1) each example's gradient in step 2 is the
mean over its K augmented copies, taken before clipping.

Batches larger than memory allows are computed in fixed-size micro-batches (virtual batching):
clipped sums are accumulated over the micro-batches of one batch and the noise is added once.
Every compiled function sees fixed shapes, so variable Poisson batch sizes never recompile, and
the host only loops over micro-batches, never over examples.

The loss is written for ONE example: ``loss_fn(params, example_inputs, example_label) ->
scalar`` (a Flax model gets its batch axis back with ``model.apply(params, x[None])[0]``).

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpedu import clipping, noise
from dpedu._validation import check_noise_multiplier, check_positive

PyTree = Any
LossFn = Callable[..., jax.Array]


def _ghost_clipped_grad_sum(loss_fn: LossFn) -> Callable:
    # Duck-typed so that this module needs no Flax: dpedu.ghost.GhostLoss provides the method.
    method = getattr(loss_fn, "clipped_grad_sum", None)
    if not callable(method):
        raise ValueError("clipping_method='ghost' needs a loss_fn with a clipped_grad_sum method, e.g. "
                         f"dpedu.ghost.GhostLoss(module, example_loss); got {loss_fn!r}")
    return method


def clipped_grad_sum(loss_fn: LossFn, params: PyTree, inputs, labels, mask, l2_clip_norm,
                     augmult: bool = False, clipping_method: str = "per_example",
                     norm_chunk_size: int | None = None) -> tuple[PyTree, dict]:
    """Sum over a (micro-)batch of per-example clipped gradients, and clipping statistics.

    Abadi et al. 2016, Algorithm 1, "Compute gradient" and "Clip gradient", summed:
    ``Σᵢ maskᵢ · gᵢ · min(1, C / ‖gᵢ‖)``, by any method of :data:`dpedu.clipping.CLIPPING_METHODS`
    (the same sum in exact arithmetic): ``"per_example"`` (:func:`dpedu.clipping.clipped_grad`,
    ``jax.vmap`` of ``jax.grad``, each gradient clipped then summed), ``"two_pass"``
    (:func:`dpedu.clipping.two_pass_clipped_grad_sum`: norms, then one weighted batched backward
    pass) or ``"ghost"`` (``loss_fn.clipped_grad_sum``, which :class:`dpedu.ghost.GhostLoss`
    provides: one backward pass to the layer outputs, for Flax Dense/Conv/GroupNorm/WSConv models). Pure and
    jit-friendly (``loss_fn``, ``augmult``, ``clipping_method`` and ``norm_chunk_size`` static).

    Formal guarantees:
        The sum has l2 sensitivity ``l2_clip_norm`` under adding or removing one example, for any
        padding: masked examples contribute exactly zero. The statistics are NOT private (they
        are exact functions of the batch): they are for monitoring and teaching, and publishing
        them is not covered by the accounted ε.

    Edge cases: all-False ``mask`` gives zeros and ``batch_size == 0``; per-example edge cases
    as :func:`dpedu.clipping.clip_to_norm` (a NaN gradient contributes zero).

    Args:
        loss_fn: one-example loss ``loss_fn(params, example_inputs, example_label) -> scalar``.
        params: parameter pytree.
        inputs: ``[B, ...]``, or ``[B, K, ...]`` with ``augmult`` (K augmented copies).
        labels: ``[B]``.
        mask: bool ``[B]``; False marks padding.
        l2_clip_norm: ``C`` in ``[0, inf]``.
        augmult: ``inputs`` carries the copy axis K; gradients are averaged over it before
            clipping (De et al. 2022, §3.1).
        clipping_method: ``"per_example"``, ``"two_pass"`` or ``"ghost"``
            (:data:`dpedu.clipping.CLIPPING_METHODS`); ``"ghost"`` needs ``loss_fn`` to be a
            :class:`dpedu.ghost.GhostLoss` (or anything with its ``clipped_grad_sum`` method).
        norm_chunk_size: ``"two_pass"`` only: examples per ``vmap`` in the norm pass
            (:func:`dpedu.clipping.per_example_grad_norms`); None: the whole micro-batch.

    Returns:
        ``(grad_sum, sums)``: ``grad_sum`` has the structure of ``params``; ``sums`` is a dict of
        scalars that add up over micro-batches: ``batch_size`` (real examples), ``clipped_count``
        (examples whose norm exceeded ``C``) and ``grad_norm_sum`` (sum of pre-clipping norms).

    Raises:
        ValueError: an unknown ``clipping_method``, a bad ``norm_chunk_size`` or ``l2_clip_norm``;
            ``"ghost"`` with a ``loss_fn`` lacking ``clipped_grad_sum`` or a model it does not
            support (the message names the layer or parameter).

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    method = clipping.check_clipping_method(clipping_method)
    if method == "ghost":
        grad_sum, norms = _ghost_clipped_grad_sum(loss_fn)(params, inputs, labels, mask, l2_clip_norm,
                                                           augmult=augmult)
    elif method == "two_pass":
        grad_sum, norms = clipping.two_pass_clipped_grad_sum(loss_fn, params, inputs, labels, mask, l2_clip_norm,
                                                             augmult=augmult, chunk_size=norm_chunk_size)
    else:
        clipped, norms = clipping.clipped_grad(loss_fn, l2_clip_norm, augmult=augmult)(params, inputs, labels, mask)
        grad_sum = jax.tree_util.tree_map(lambda leaf: jnp.sum(leaf, axis=0), clipped)
    mask = jnp.asarray(mask, dtype=bool)
    sums = {
        "batch_size": jnp.sum(mask, dtype=jnp.int32),
        "clipped_count": jnp.sum(mask & (norms > l2_clip_norm), dtype=jnp.int32),
        "grad_norm_sum": jnp.sum(jnp.where(mask, norms, 0.0)),
    }
    return grad_sum, sums


def private_gradient(key: jax.Array, grad_sum: PyTree, *, noise_multiplier, l2_clip_norm,
                     expected_batch_size) -> PyTree:
    """The DP-SGD gradient from a batch's clipped sum: add ``N(0, σ²C²)`` once, divide by ``qN``.

    Abadi et al. 2016, Algorithm 1, "Add noise": ``g̃ = (Σᵢ ḡᵢ + N(0, σ²C²I)) / L`` with ``L``
    the EXPECTED batch size ``qN`` (Poisson sampling: the realised size is random and private).

    Formal guarantees:
        If ``grad_sum`` is a sum of per-example gradients clipped to ``l2_clip_norm`` over a
        Poisson sample with rate ``q`` (as :func:`clipped_grad_sum` produces, summed over all the
        micro-batches of the batch), the result is one step of the sampled Gaussian mechanism with
        noise multiplier ``noise_multiplier`` — the mechanism :func:`dpedu.accounting.dp_event`
        accounts for. Dividing by the public constant ``expected_batch_size`` is
        post-processing. Call it exactly ONCE per batch with a fresh ``key``, even for an empty
        batch.

    Edge cases: an all-zero ``grad_sum`` (empty batch) still gets the full noise.

    Args:
        key: PRNG key for this step's noise (never reused).
        grad_sum: the clipped-gradient sum over the whole (logical) batch.
        noise_multiplier: ``σ > 0``.
        l2_clip_norm: ``C > 0`` (finite).
        expected_batch_size: ``qN > 0``.

    Returns:
        The noisy average gradient, same structure as ``grad_sum``.

    Raises:
        ValueError: an argument (unless a JAX array) outside its range.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    # JAX arrays (possibly traced inside jit) cannot be checked here; anything else is.
    if not isinstance(noise_multiplier, jax.Array):
        noise_multiplier = check_noise_multiplier(noise_multiplier)
    if not isinstance(l2_clip_norm, jax.Array):
        l2_clip_norm = check_positive("l2_clip_norm", l2_clip_norm)
    if not isinstance(expected_batch_size, jax.Array):
        expected_batch_size = check_positive("expected_batch_size", expected_batch_size)
    noisy_sum = noise.add_gaussian_noise(key, grad_sum, noise_multiplier * l2_clip_norm)
    return jax.tree_util.tree_map(lambda leaf: leaf / expected_batch_size, noisy_sum)


class TrainStep:
    """One optimiser step on one logical batch given as micro-batches; built by
    :func:`make_dp_step` (DP-SGD) or :func:`make_nonprivate_step` (baseline).

    Call it as ``params, opt_state, stats = step(params, opt_state, key, inputs, labels, mask)``
    with a leading micro-batch axis on the batch: ``inputs`` ``[n_micro, m, ...]`` (``[n_micro,
    m, K, ...]`` with augmult), ``labels`` and ``mask`` ``[n_micro, m]`` — e.g. ``images[idx]``,
    ``labels[idx]``, ``mask`` with ``(idx, mask)`` from
    :func:`dpedu.sampling.pad_to_microbatches`. NumPy or JAX arrays.

    With one micro-batch the whole step (gradients, clipping, noise, optimiser update) is ONE
    jitted call (:attr:`fused`). With more, the host loops over micro-batches: :attr:`grad_sum`
    on the first, :attr:`accumulate` on the others, then :attr:`apply` once. All four are
    ``jax.jit`` functions of fixed shapes (compiled once per micro-batch shape), asynchronous
    (no host synchronisation inside a step) and usable directly:

    * ``fused(params, opt_state, key, inputs, labels, mask) -> (params, opt_state, stats)``
      for one micro-batch (``inputs`` ``[m, ...]``);
    * ``grad_sum(params, inputs, labels, mask) -> acc``;
    * ``accumulate(acc, params, inputs, labels, mask) -> acc`` (``acc`` is donated);
    * ``apply(params, opt_state, key, acc) -> (params, opt_state, stats)``.

    ``stats`` is a dict of device scalars. DP step: ``batch_size`` (realised), ``clipped_fraction``
    (fraction of the batch's examples whose gradient norm exceeded C), ``mean_grad_norm`` (mean
    pre-clipping norm). Non-private step: ``batch_size``. They are NOT privatised: for
    monitoring only; publishing them is not covered by ε.

    ``key`` is the step's noise key (unused by the non-private step, kept for one signature).
    :attr:`optimizer` is the optax transformation (``step.optimizer.init(params)`` starts a run).

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """

    def __init__(self, batch_grad_sum: Callable, finalize: Callable, optimizer: optax.GradientTransformation):
        def apply(params, opt_state, key, acc):
            gradient, stats = finalize(key, *acc)
            updates, opt_state = optimizer.update(gradient, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, stats

        def accumulate(acc, params, inputs, labels, mask):
            return jax.tree_util.tree_map(jnp.add, acc, batch_grad_sum(params, inputs, labels, mask))

        def fused(params, opt_state, key, inputs, labels, mask):
            return apply(params, opt_state, key, batch_grad_sum(params, inputs, labels, mask))

        self.optimizer = optimizer
        self.grad_sum = jax.jit(batch_grad_sum)
        self.accumulate = jax.jit(accumulate, donate_argnums=0)
        self.apply = jax.jit(apply)
        self.fused = jax.jit(fused)

    def __call__(self, params, opt_state, key, inputs, labels, mask):
        num_micro = np.shape(mask)[0] if np.ndim(mask) == 2 else None
        if num_micro is None or num_micro < 1:
            raise ValueError(f"mask must have shape [n_micro >= 1, microbatch_size], got {np.shape(mask)}")
        if num_micro == 1:
            return self.fused(params, opt_state, key, inputs[0], labels[0], mask[0])
        acc = self.grad_sum(params, inputs[0], labels[0], mask[0])
        for j in range(1, num_micro):
            acc = self.accumulate(acc, params, inputs[j], labels[j], mask[j])
        return self.apply(params, opt_state, key, acc)


def make_dp_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, l2_clip_norm: float,
                 noise_multiplier: float, expected_batch_size: float, augmult: bool = False,
                 clipping_method: str = "per_example", norm_chunk_size: int | None = None) -> TrainStep:
    """A jitted DP-SGD step for ``optimizer``: clipped sum, noise once, ``/ qN``, update.

    Abadi et al. 2016, Algorithm 1 (with De et al. 2022's augmentation multiplicity when
    ``augmult``): :func:`clipped_grad_sum` over each micro-batch, summed, then
    :func:`private_gradient`, then ``optimizer`` (any optax transformation: SGD, momentum, Adam
    all act on the privatised gradient only, so they are post-processing).

    Formal guarantees:
        Each call releases (through the new parameters) one sampled-Gaussian-mechanism output with
        noise multiplier ``noise_multiplier``, provided the batch came from
        :func:`dpedu.sampling.poisson_batch_indices` with ``sampling_rate = q``, every batch is
        passed in full (padding masked), ``key`` is fresh each step, and ``expected_batch_size ==
        q · N``. T such calls are accounted by ``dpedu.accounting.dp_event(noise_multiplier, q,
        T)``. The ``stats`` are not private (see :class:`TrainStep`).

    Args:
        loss_fn: one-example loss ``loss_fn(params, example_inputs, example_label) -> scalar``.
        optimizer: an ``optax.GradientTransformation``.
        l2_clip_norm: ``C > 0``, finite.
        noise_multiplier: ``σ > 0``.
        expected_batch_size: ``q · N > 0`` (the public normaliser; not the realised size).
        augmult: inputs carry K augmented copies per example (``[..., m, K, ...]``).
        clipping_method: how the clipped sum is computed, ``"per_example"``, ``"two_pass"`` or
            ``"ghost"`` (same result; see :func:`clipped_grad_sum`): a speed choice only.
            ``"ghost"`` needs a :class:`dpedu.ghost.GhostLoss` as ``loss_fn``.
        norm_chunk_size: ``"two_pass"`` only: examples per ``vmap`` in its norm pass.

    Returns:
        A :class:`TrainStep`.

    Raises:
        ValueError: an argument outside its range.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    l2_clip_norm = check_positive("l2_clip_norm", l2_clip_norm)
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    expected_batch_size = check_positive("expected_batch_size", expected_batch_size)
    clipping.check_clipping_method(clipping_method)
    clipping.check_chunk_size(norm_chunk_size, "norm_chunk_size")
    if clipping_method == "ghost":
        _ghost_clipped_grad_sum(loss_fn)  # fail now, not at the first step

    def batch_grad_sum(params, inputs, labels, mask):
        return clipped_grad_sum(loss_fn, params, inputs, labels, mask, l2_clip_norm, augmult, clipping_method,
                                norm_chunk_size)

    def finalize(key, grad_sum, sums):
        gradient = private_gradient(key, grad_sum, noise_multiplier=noise_multiplier,
                                    l2_clip_norm=l2_clip_norm, expected_batch_size=expected_batch_size)
        examples = jnp.maximum(sums["batch_size"], 1)
        stats = {
            "batch_size": sums["batch_size"],
            "clipped_fraction": sums["clipped_count"] / examples,
            "mean_grad_norm": sums["grad_norm_sum"] / examples,
        }
        return gradient, stats

    return TrainStep(batch_grad_sum, finalize, optimizer)


def make_nonprivate_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                         augmult: bool = False) -> TrainStep:
    """A jitted ordinary SGD step with the same call signature as :func:`make_dp_step`.

    The baseline for accuracy and speed comparisons: the mean loss gradient over the real
    (unmasked) examples, by ordinary batched back-propagation (no per-example gradients, no
    clipping, no noise), divided by the REALISED batch size, then ``optimizer``.

    Formal guarantees:
        None: this step is not differentially private.

    Args:
        loss_fn: one-example loss ``loss_fn(params, example_inputs, example_label) -> scalar``.
        optimizer: an ``optax.GradientTransformation``.
        augmult: inputs carry K augmented copies per example; each example's loss is their mean.

    Returns:
        A :class:`TrainStep` (its ``key`` argument is unused).

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    example_loss = clipping.mean_over_copies(loss_fn) if augmult else loss_fn

    def batch_grad_sum(params, inputs, labels, mask):
        mask = jnp.asarray(mask, dtype=bool)

        def loss_sum(p):
            losses = jax.vmap(example_loss, in_axes=(None, 0, 0))(p, inputs, labels)
            return jnp.sum(jnp.where(mask, losses, 0.0))

        return jax.grad(loss_sum)(params), {"batch_size": jnp.sum(mask, dtype=jnp.int32)}

    def finalize(key, grad_sum, sums):
        del key  # no noise
        examples = jnp.maximum(sums["batch_size"], 1)
        return jax.tree_util.tree_map(lambda leaf: leaf / examples, grad_sum), sums

    return TrainStep(batch_grad_sum, finalize, optimizer)
