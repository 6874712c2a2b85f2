"""Membership inference against trained models: the loss-threshold attack and LiRA, and how to report them.

Membership inference is the hypothesis test of notebook 01 asked of a trained model: given the
model ``θ`` and an example ``z``, decide ``H₀: z ∉ D`` (``θ`` trained without ``z``) against
``H₁: z ∈ D``. An attack is a score (high means "member") thresholded at some level; its quality
is its whole trade-off between false and true positive rates.

* Loss threshold (Yeom, Giacomelli, Fredrikson & Jha 2018, "Privacy Risk in Machine Learning:
  Analyzing the Connection to Overfitting", CSF 2018): score ``−ℓ(θ; z)``
  (:func:`loss_threshold_scores`): members have lower loss.
* LiRA (Carlini, Chien, Nasr, Song, Terzis & Tramèr 2022, "Membership Inference Attacks From
  First Principles", IEEE S&P 2022, Algorithm 1, online): train shadow models on random halves of
  a pool of examples (:func:`membership_masks`, :func:`train_shadow_models`), so that every
  example has models trained with it ("in") and without it ("out"); fit one Gaussian per example
  to the in-models' and one to the out-models' logit-scaled confidences
  ``φ = log p_y − log(1 − p_y)`` (:func:`logit_confidence`, their logit scaling), and score the target
  model's ``φ`` by the log likelihood ratio of the two Gaussians (:func:`lira_scores`). With few
  shadow models the variances are estimated once for all examples (their "global
  variance"). :func:`lira_leave_one_out` attacks every model in turn with the others as shadows.
* Reporting (Carlini et al. 2022, §III): an attack that succeeds on a few examples with high
  confidence matters even when its average accuracy is poor, so report the ROC curve on log–log
  axes (:func:`roc_curve`) and the true positive rate at LOW false positive rates (0.1 %, 1 %),
  not only the AUC (:func:`attack_summary`, computed with ``jax_privacy.auditing``).

Differential privacy bounds every such test: if training is (ε, δ)-DP (add or remove one
example), any attack has ``TPR ≤ e^ε · FPR + δ`` at every threshold (Kairouz, Oh & Viswanath
2015; notebook 01's hypothesis-testing view), so at ε = 1 and FPR 0.1 % the TPR is at most
about 0.27 %: near chance.

DP training reuses :mod:`dpedu.dpsgd` (per-example clipping, noise once per step, division by the
public expected batch size) with Poisson sampling of each model's own data set done inside JAX;
nothing here clips or adds noise by itself.

Taught in notebooks/06_auditing.ipynb.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpedu import clipping, dpsgd, sampling
from dpedu._validation import check_noise_multiplier, check_non_negative, check_positive, check_steps

__all__ = [
    "membership_masks",
    "poisson_schedule",
    "ShadowModels",
    "train_shadow_models",
    "stacked_logits",
    "logit_confidence",
    "loss_threshold_scores",
    "lira_scores",
    "lira_leave_one_out",
    "pool_by_membership",
    "roc_curve",
    "attack_summary",
]

PyTree = Any

# The false positive rates at which Carlini et al. 2022 report their attacks.
REPORTED_FPRS = (0.001, 0.01)


# ---------------------------------------------------------------------------------------------
# Who is in which model
# ---------------------------------------------------------------------------------------------


def membership_masks(seed: int, num_models: int, num_examples: int) -> np.ndarray:
    """Which examples each model trains on: every example in exactly half of the models.

    Carlini et al. 2022's experiments (and their released code): every example is put in a uniformly
    random half of the ``M`` models, so each has ``M / 2`` models trained with it and ``M / 2``
    without. :func:`train_shadow_models` also needs every model to train on the same number of
    examples, so the rows are then evened out to exactly ``N / 2`` each by random swaps that keep
    every column's count (move a random example from a model with too many to one with too few
    that lacks it).

    Args:
        seed: NumPy seed of the split.
        num_models: ``M``, even and ``≥ 2``.
        num_examples: ``N``, even and ``≥ 2``.

    Returns:
        bool ``[M, N]``: ``masks[m, i]`` is True when example ``i`` is in model ``m``'s training set;
        every column holds ``M / 2`` True and every row ``N / 2``.

    Raises:
        ValueError: ``num_models`` or ``num_examples`` not an even integer ``≥ 2``.

    Taught in notebooks/06_auditing.ipynb.
    """
    num_models = _check_even("num_models", num_models)
    num_examples = _check_even("num_examples", num_examples)
    rng = np.random.default_rng(seed)
    # Carlini et al.'s split: per example, the models of the M/2 smallest of M uniform draws.
    masks = np.argsort(rng.random((num_models, num_examples)), axis=0).argsort(axis=0) < num_models // 2
    target = num_examples // 2
    sizes = masks.sum(axis=1)
    while sizes.max() > target:   # then some row is below target too (the total is M·N/2)
        heavy = rng.choice(np.flatnonzero(sizes > target))
        light = rng.choice(np.flatnonzero(sizes < target))
        example = rng.choice(np.flatnonzero(masks[heavy] & ~masks[light]))  # non-empty: heavy has more
        masks[heavy, example], masks[light, example] = False, True
        sizes[heavy] -= 1
        sizes[light] += 1
    return masks


def _check_even(name: str, value) -> int:
    value = check_steps(value, name)
    if value < 2 or value % 2:
        raise ValueError(f"{name} must be an even integer >= 2, got {value!r}")
    return value


def _check_masks(masks) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.dtype != bool or masks.ndim != 2:
        raise ValueError(f"masks must be a bool array [num_models, num_examples], got dtype {masks.dtype} "
                         f"and shape {masks.shape}")
    return masks


# ---------------------------------------------------------------------------------------------
# Training many models at once
# ---------------------------------------------------------------------------------------------


def poisson_schedule(subset_size: int, expected_batch_size: float, epochs: float) -> tuple[float, int]:
    """Sampling rate and number of steps of DP-SGD with Poisson sampling for ``epochs`` passes.

    ``q = L / n`` (expected batch size ``L`` over the ``n`` examples of one model) and
    ``T = round(epochs · n / L)`` steps: Abadi et al. 2016, §3.1 (an "epoch" is ``n / L`` lots).
    These are the ``q`` and ``T`` that :func:`dpedu.accounting.epsilon` must be given.

    Args:
        subset_size: ``n ≥ 1``, examples in each model's training set.
        expected_batch_size: ``L`` in ``(0, n]``.
        epochs: ``> 0``.

    Returns:
        ``(sampling_rate, steps)`` with ``steps ≥ 1``.

    Raises:
        ValueError: an argument outside its range.

    Taught in notebooks/06_auditing.ipynb.
    """
    subset_size = check_steps(subset_size, "subset_size")
    expected_batch_size = check_positive("expected_batch_size", expected_batch_size)
    if expected_batch_size > subset_size:
        raise ValueError(f"expected_batch_size must be in (0, subset_size={subset_size}], got {expected_batch_size}")
    epochs = check_positive("epochs", epochs)
    return expected_batch_size / subset_size, max(1, round(epochs * subset_size / expected_batch_size))


@dataclasses.dataclass(frozen=True)
class ShadowModels:
    """Models trained by :func:`train_shadow_models`, and how.

    Attributes:
        params: the models' parameters, one pytree with a leading model axis ``[M, ...]``.
        batch_sizes: int32 ``[M, T]``, the realised size of every batch of every model (Poisson
            for DP-SGD, constant otherwise). NOT private: for checks and teaching only.
        steps: ``T``, optimiser steps per model.
        sampling_rate: ``q`` of DP-SGD's Poisson sampling, or None (non-private: shuffled batches).
        noise_multiplier: ``σ``, or None (non-private).
        expected_batch_size: DP-SGD's public normaliser ``q · n``, or the fixed batch size.
        padded_batch_size: the fixed (compiled) batch size that holds every Poisson batch.
    """

    params: PyTree
    batch_sizes: np.ndarray
    steps: int
    sampling_rate: float | None
    noise_multiplier: float | None
    expected_batch_size: float
    padded_batch_size: int


def train_shadow_models(module, images, labels, masks, keys, *, epochs: float, batch_size: float,
                        learning_rate: float, momentum: float = 0.9, l2_clip_norm: float | None = None,
                        noise_multiplier: float | None = None, clipping_method: str = "per_example",
                        num_stds: float = 6.0, models_per_batch: int = 8) -> ShadowModels:
    """Trains ``M`` models, model ``m`` on the examples ``i`` with ``masks[m, i]``, vectorised over models.

    The shadow (and target) models of LiRA (Carlini et al. 2022): same architecture, same
    algorithm, different random halves of the pool and independent random initialisations. Two
    algorithms, both SGD with ``momentum`` (optax) for ``epochs`` passes over a model's ``n``
    examples:

    * non-private (``l2_clip_norm=None``): every epoch a fresh random permutation of the model's
      examples is cut into ``n // batch_size`` batches of exactly ``batch_size`` (the remainder
      dropped, as :func:`dpedu.sampling.shuffled_batches`), mean loss gradient
      (:func:`dpedu.dpsgd.make_nonprivate_step`);
    * DP-SGD (``l2_clip_norm`` and ``noise_multiplier`` given): Abadi et al. 2016, Algorithm 1,
      with :func:`dpedu.dpsgd.make_dp_step`. Each of the ``T`` steps (:func:`poisson_schedule`)
      includes every one of the model's examples independently with probability
      ``q = batch_size / n`` (``jax.random.bernoulli`` inside JAX), gathers them into a batch of the
      fixed size ``padded_batch_size`` (:func:`dpedu.sampling.poisson_microbatch_size` with
      ``num_stds``; empty slots masked), clips, adds the noise once and divides by the EXPECTED
      batch size ``q · n``. A batch larger than the padded size is never truncated silently: the
      function raises ``RuntimeError`` after training (choose a larger ``num_stds``).

    Randomness of model ``m`` (so that a hand-written loop can replay it): ``init_key, run_key =
    jax.random.split(keys[m])``; ``params = module.init(init_key, images[:1])``. Non-private:
    ``jax.random.split(run_key, epochs)`` are the epochs' permutation keys (of the model's example
    list ``jnp.flatnonzero(masks[m])``). DP-SGD: step ``t`` uses ``sample_key, noise_key =
    jax.random.split(jax.random.split(run_key, T)[t])``: ``bernoulli(sample_key, q, (n,))`` over the
    model's example list (in order) and ``noise_key`` for the step's noise.

    The models are trained ``models_per_batch`` at a time (``jax.vmap`` inside ``jax.lax.map``),
    in one compiled program: no Python loop over models, steps or examples.

    Formal guarantees:
        DP-SGD: each model is the output of ``T`` adaptive compositions of the Poisson-subsampled
        Gaussian mechanism with rate ``q`` and noise multiplier ``σ`` on its OWN training set (add
        or remove one example), examples outside it (``masks[m, i]`` False) having no influence at
        all: account it with ``dpedu.accounting.epsilon(σ, q, T, δ)``, which is exactly the
        sampler that runs. Non-private: none.

    Args:
        module: a Flax classifier mapping ``[B, ...]`` images to ``[B, C]`` logits (e.g.
            :class:`dpedu.attacks.SmallMLP`).
        images, labels: the pool, ``[N, ...]`` and ``[N]``.
        masks: bool ``[M, N]`` (:func:`membership_masks`); every row must hold the same number ``n``
            of True.
        keys: ``[M]`` PRNG keys, one per model.
        epochs: passes over each model's examples (``> 0``; an integer for non-private training).
        batch_size: non-private: the batch size, an integer in ``[1, n]``; DP-SGD: the EXPECTED
            batch size ``L = q · n`` in ``(0, n]``.
        learning_rate: ``> 0``.
        momentum: heavy-ball momentum in ``[0, 1)`` (0: plain SGD).
        l2_clip_norm: ``C > 0`` for DP-SGD, None for non-private training.
        noise_multiplier: ``σ > 0`` for DP-SGD (calibrate it with
            :func:`dpedu.accounting.calibrate_noise_multiplier` for :func:`poisson_schedule`'s ``q``
            and ``T``), None for non-private training.
        clipping_method: how DP-SGD computes the clipped sum (:func:`dpedu.dpsgd.clipped_grad_sum`;
            ``"ghost"`` wraps ``module`` in :class:`dpedu.ghost.GhostLoss`): a speed choice only.
        num_stds: DP-SGD: head-room of the padded batch in standard deviations of the batch size.
        models_per_batch: models trained at once (memory vs speed).

    Returns:
        A :class:`ShadowModels`.

    Raises:
        ValueError: an argument outside its range; rows of ``masks`` of different sizes; only one
            of ``l2_clip_norm`` and ``noise_multiplier`` given.
        RuntimeError: a Poisson batch was larger than the padded batch size.

    Taught in notebooks/06_auditing.ipynb.
    """
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    if labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"images [N, ...] and labels [N] must have the same N, got {images.shape} and {labels.shape}")
    masks = _check_masks(masks)
    num_models, num_examples = masks.shape
    if num_examples != labels.shape[0]:
        raise ValueError(f"masks must have one column per example ({labels.shape[0]}), got {num_examples}")
    sizes = masks.sum(axis=1)
    if sizes.min() != sizes.max() or sizes[0] < 1:
        raise ValueError(f"every model must train on the same number (>= 1) of examples; rows of masks hold "
                         f"{sizes.min()} to {sizes.max()} (use membership_masks with an even num_examples)")
    subset_size = int(sizes[0])
    keys = jnp.asarray(keys)
    if keys.shape[:1] != (num_models,):
        raise ValueError(f"keys must hold one PRNG key per model ({num_models}), got shape {keys.shape}")
    learning_rate = check_positive("learning_rate", learning_rate)
    momentum = check_non_negative("momentum", momentum)
    if momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    models_per_batch = check_steps(models_per_batch, "models_per_batch")
    if (l2_clip_norm is None) != (noise_multiplier is None):
        raise ValueError("give both l2_clip_norm (> 0) and noise_multiplier (> 0) for DP-SGD, or neither for "
                         f"non-private training; got {l2_clip_norm!r} and {noise_multiplier!r}")
    private = l2_clip_norm is not None
    if private:
        l2_clip_norm = check_positive("l2_clip_norm", l2_clip_norm)
        noise_multiplier = check_noise_multiplier(noise_multiplier)
        sampling_rate, steps = poisson_schedule(subset_size, batch_size, epochs)
        padded = sampling.poisson_microbatch_size(subset_size, sampling_rate, num_stds=num_stds)
        expected = sampling_rate * subset_size
        clipping.check_clipping_method(clipping_method)
    else:
        epochs = check_steps(epochs, "epochs (an integer for non-private training)")
        batch_size = check_steps(batch_size, "batch_size")
        if batch_size > subset_size:
            raise ValueError(f"batch_size must be in [1, n={subset_size}], got {batch_size}")
        sampling_rate = clipping_method = None
        steps = epochs * (subset_size // batch_size)
        padded = batch_size
        expected = float(batch_size)
    train_all = _trainer(module, learning_rate, momentum, l2_clip_norm, noise_multiplier, clipping_method,
                         subset_size, steps, padded, sampling_rate, epochs, batch_size,
                         min(models_per_batch, num_models))
    params, counts = train_all(images, labels, keys, jnp.asarray(masks))
    counts = np.asarray(counts)
    if private and counts.max() > padded:
        overflows = int(np.sum(counts > padded))
        raise RuntimeError(f"{overflows} Poisson batch(es) held more than the padded batch size {padded} "
                           f"(largest {counts.max()}); the models are not valid DP-SGD outputs: retrain with a "
                           f"larger num_stds (now {num_stds})")
    return ShadowModels(params=params, batch_sizes=counts, steps=steps, sampling_rate=sampling_rate,
                        noise_multiplier=noise_multiplier, expected_batch_size=expected, padded_batch_size=padded)


@functools.lru_cache(maxsize=16)
def _trainer(module, learning_rate, momentum, l2_clip_norm, noise_multiplier, clipping_method, subset_size, steps,
             padded, sampling_rate, epochs, batch_size, models_per_batch):
    """The jitted training program of :func:`train_shadow_models` (arguments checked there), cached so
    that training again with the same settings (other data of the same shape, other keys) does not
    compile again."""
    optimizer = optax.sgd(learning_rate, momentum=momentum or None)
    private = l2_clip_norm is not None
    if not private:
        step = dpsgd.make_nonprivate_step(_cross_entropy(module), optimizer)
    else:
        if clipping_method == "ghost":
            from dpedu.ghost import GhostLoss  # Flax-only; imported where needed

            loss_fn = GhostLoss(module, optax.softmax_cross_entropy_with_integer_labels)
        else:
            loss_fn = _cross_entropy(module)
        step = dpsgd.make_dp_step(loss_fn, optimizer, l2_clip_norm=l2_clip_norm, noise_multiplier=noise_multiplier,
                                  expected_batch_size=sampling_rate * subset_size, clipping_method=clipping_method)

    def train_one(images, labels, key, member_mask):
        members = jnp.flatnonzero(member_mask, size=subset_size)
        init_key, run_key = jax.random.split(key)
        params = module.init(init_key, images[:1])
        state = (params, optimizer.init(params))

        if private:
            def one_step(state, step_key):
                sample_key, noise_key = jax.random.split(step_key)
                chosen = jax.random.bernoulli(sample_key, sampling_rate, (subset_size,))
                count = jnp.sum(chosen, dtype=jnp.int32)
                slots = jnp.flatnonzero(chosen, size=padded, fill_value=0)
                index = members[slots]
                mask = jnp.arange(padded) < count
                params, opt_state, _ = step.fused(*state, noise_key, images[index], labels[index], mask)
                return (params, opt_state), count

            state, counts = jax.lax.scan(one_step, state, jax.random.split(run_key, steps))
        else:
            batches_per_epoch = subset_size // batch_size

            def one_epoch(state, epoch_key):
                order = jax.random.permutation(epoch_key, subset_size)[: batches_per_epoch * batch_size]

                def one_step(state, slots):
                    index = members[slots]
                    params, opt_state, _ = step.fused(*state, epoch_key, images[index], labels[index],
                                                      jnp.ones(batch_size, dtype=bool))
                    return (params, opt_state), jnp.int32(batch_size)

                return jax.lax.scan(one_step, state, order.reshape(batches_per_epoch, batch_size))

            state, counts = jax.lax.scan(one_epoch, state, jax.random.split(run_key, epochs))
            counts = counts.reshape(steps)
        return state[0], counts

    @jax.jit
    def train_all(images, labels, keys, masks):
        return jax.lax.map(lambda model: train_one(images, labels, *model), (keys, masks), batch_size=models_per_batch)

    return train_all


def _cross_entropy(module) -> Callable[..., jax.Array]:
    def loss_fn(params, image, label):
        logits = module.apply(params, image[None])[0]
        return jax.nn.logsumexp(logits) - logits[label]

    return loss_fn


def stacked_logits(apply_fn: Callable, params: PyTree, images, *, models_per_batch: int = 8) -> jax.Array:
    """Every model's logits on every image: ``[M, N, C]``.

    ``apply_fn(params_of_one_model, images) -> [N, C]`` (e.g. a Flax module's ``apply``); ``params``
    carries a leading model axis (:attr:`ShadowModels.params`). Computed ``models_per_batch``
    models at a time (``jax.lax.map``), to bound memory.

    Raises:
        ValueError: ``models_per_batch`` not an integer ``≥ 1``.

    Taught in notebooks/06_auditing.ipynb.
    """
    models_per_batch = check_steps(models_per_batch, "models_per_batch")
    images = jnp.asarray(images)
    num_models = jax.tree_util.tree_leaves(params)[0].shape[0]
    return jax.jit(lambda p, x: jax.lax.map(lambda one: apply_fn(one, x), p,
                                            batch_size=min(models_per_batch, num_models)))(params, images)


# ---------------------------------------------------------------------------------------------
# Attack scores
# ---------------------------------------------------------------------------------------------


def _check_logits(logits, labels):
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim < 1 or labels.shape != logits.shape[-1 - labels.ndim:-1] and labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels must match the leading axes of logits [..., C] (or its last axes but one), got "
                         f"labels {labels.shape} and logits {logits.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    return logits, jnp.broadcast_to(labels, logits.shape[:-1])


def logit_confidence(logits, labels) -> jax.Array:
    """Carlini et al.'s logit-scaled confidence ``φ = log p_y − log(1 − p_y)``, computed stably.

    Carlini et al. 2022, §IV ("logit scaling"): ``φ(p) = log(p / (1 − p))`` with ``p = softmax(z)_y``
    the model's confidence in the true label; after this transformation the confidences of one
    example over models trained with (or without) it are close to Gaussian. Computed from the
    logits ``z``: ``log p_y = z_y − logsumexp(z)`` and ``log(1 − p_y) = logsumexp_{c≠y}(z_c) −
    logsumexp(z)``, so ``φ = z_y − logsumexp_{c≠y}(z_c)`` — finite wherever the logits are, even
    when ``p_y`` rounds to 0 or 1 in floating point.

    Args:
        logits: ``[..., C]`` with ``C ≥ 2``.
        labels: integer true labels, shaped as ``logits`` without its last axis, or as its last
            axes but one (broadcast over leading model axes: ``[N]`` for ``[M, N, C]`` logits).

    Returns:
        ``φ``, shaped as ``logits`` without its last axis.

    Raises:
        ValueError: shapes that do not match, non-integer labels, fewer than 2 classes.

    Taught in notebooks/06_auditing.ipynb.
    """
    logits, labels = _check_logits(logits, labels)
    if logits.shape[-1] < 2:
        raise ValueError(f"logit_confidence needs at least 2 classes, got {logits.shape[-1]}")
    true_class = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
    z_y = jnp.sum(jnp.where(true_class, logits, 0.0), axis=-1)
    others = jax.nn.logsumexp(jnp.where(true_class, -jnp.inf, logits), axis=-1)
    return z_y - others


def loss_threshold_scores(logits, labels) -> jax.Array:
    """The loss-threshold attack's score ``−ℓ(θ; z) = log p_y`` (Yeom et al. 2018).

    Members of the training set tend to have lower loss: "member" when ``−ℓ`` exceeds a threshold
    (Yeom et al. use the average training loss; sweeping all thresholds gives the ROC curve).
    One threshold for all examples — the baseline LiRA improves on by calibrating per example.

    Args:
        logits: ``[..., C]``.
        labels: as for :func:`logit_confidence`.

    Returns:
        ``log softmax(z)_y``, shaped as ``logits`` without its last axis.

    Raises:
        ValueError: shapes that do not match, non-integer labels.

    Taught in notebooks/06_auditing.ipynb.
    """
    logits, labels = _check_logits(logits, labels)
    return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[..., None], axis=-1)[..., 0]


def _lira_fit(confidence, in_shadow, out_shadow, global_variance: bool):
    """Per-example means, and variances per example or pooled, of the in- and out-shadow confidences."""

    def moments(weight):
        count = jnp.sum(weight, axis=0)
        mean = jnp.sum(jnp.where(weight, confidence, 0.0), axis=0) / count
        squares = jnp.sum(jnp.where(weight, (confidence - mean) ** 2, 0.0), axis=0)
        if global_variance:
            # Pooled within-example variance: Σᵢ Σ_shadows (φ − μᵢ)² / Σᵢ (countᵢ − 1).
            variance = jnp.sum(squares) / jnp.sum(count - 1)
        else:
            variance = squares / (count - 1)
        return mean, jnp.maximum(variance, jnp.finfo(confidence.dtype).tiny)

    return moments(in_shadow), moments(out_shadow)


def _lira_target(confidence, masks, target, global_variance):
    shadow = (jnp.arange(confidence.shape[0]) != target)[:, None]
    (mean_in, var_in), (mean_out, var_out) = _lira_fit(confidence, masks & shadow, ~masks & shadow, global_variance)
    observed = confidence[target]
    return (jax.scipy.stats.norm.logpdf(observed, mean_in, jnp.sqrt(var_in))
            - jax.scipy.stats.norm.logpdf(observed, mean_out, jnp.sqrt(var_out)))


_lira_one = jax.jit(_lira_target, static_argnums=3)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _lira_every_target(confidence, masks, global_variance, targets_per_batch):
    # jax.lax.map over targets, vmapped in batches: memory O(targets_per_batch · M · N), not O(M² N).
    return jax.lax.map(lambda target: _lira_target(confidence, masks, target, global_variance),
                       jnp.arange(confidence.shape[0]), batch_size=targets_per_batch)


def _check_lira_inputs(confidence, masks, global_variance: bool, targets) -> tuple[jax.Array, np.ndarray]:
    confidence = jnp.asarray(confidence)
    if confidence.ndim != 2 or not jnp.issubdtype(confidence.dtype, jnp.floating):
        raise ValueError(f"confidence must be a float array [num_models, num_examples], got {confidence.dtype} "
                         f"{confidence.shape}")
    masks = _check_masks(masks)
    if masks.shape != confidence.shape:
        raise ValueError(f"masks and confidence must have the same shape, got {masks.shape} and {confidence.shape}")
    if confidence.shape[1] < 1:
        raise ValueError("LiRA needs at least one example")
    # Shadows per example once the target model is left out; a variance needs two values.
    least = 1 if global_variance else 2
    in_count, out_count = masks.sum(axis=0), (~masks).sum(axis=0)
    for target in targets:
        shadows_in, shadows_out = in_count - masks[target], out_count - ~masks[target]
        fewest_in, fewest_out = int(shadows_in.min()), int(shadows_out.min())
        if min(fewest_in, fewest_out) < least or (
                global_variance and min(np.sum(shadows_in - 1), np.sum(shadows_out - 1)) < 1):
            raise ValueError(f"LiRA needs for every example at least {least} shadow model(s) trained with it and "
                             f"{least} without it (besides the target model {target}), and two somewhere to "
                             f"estimate a variance; some example has {fewest_in} and {fewest_out}: use more "
                             f"models (membership_masks balances them)")
    return confidence, masks


def lira_scores(confidence, masks, target_model: int, *, global_variance: bool = True) -> jax.Array:
    """Online LiRA scores of every example against ONE target model, the other models as shadows.

    Carlini et al. 2022, Algorithm 1 (the online attack): for each example ``i`` fit
    ``N(μ_in, σ²_in)`` to the logit-scaled confidences (:func:`logit_confidence`) of the shadow
    models trained WITH ``i`` and ``N(μ_out, σ²_out)`` to those trained WITHOUT it, and score the
    target model's confidence ``φ`` by the log likelihood ratio
    ``log N(φ; μ_in, σ²_in) − log N(φ; μ_out, σ²_out)`` (high: member). Means are per example;
    variances (unbiased, ``n − 1``) per example, or with ``global_variance`` pooled over all
    examples (the variant they recommend when there are few shadow models, up to a few dozen).
    The target model (row ``target_model``) is never a shadow.

    Args:
        confidence: ``[M, N]`` float, ``φ`` of every model on every example.
        masks: bool ``[M, N]``, True where the model trained on the example.
        target_model: the attacked model, an index in ``[0, M)``.
        global_variance: one ``σ²_in`` and one ``σ²_out`` for all examples (default), or one
            per example.

    Returns:
        ``[N]`` float scores; ``masks[target_model]`` says which are members.

    Raises:
        ValueError: shapes that do not match; ``target_model`` out of range; an example without
            enough shadows (at least 1 in and 1 out with ``global_variance``, 2 and 2 without).

    Taught in notebooks/06_auditing.ipynb.
    """
    num_models = np.shape(confidence)[0] if np.ndim(confidence) else 0
    if isinstance(target_model, bool) or not isinstance(target_model, (int, np.integer)) or not (
            0 <= target_model < num_models):
        raise ValueError(f"target_model must be an integer in [0, num_models={num_models}), got {target_model!r}")
    confidence, masks = _check_lira_inputs(confidence, masks, global_variance, [int(target_model)])
    return _lira_one(confidence, jnp.asarray(masks), int(target_model), global_variance)


def lira_leave_one_out(confidence, masks, *, global_variance: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """LiRA against every model in turn, the others as its shadows; pooled member / non-member scores.

    Carlini et al. 2022's evaluation: each of the ``M`` models is the target once
    (:func:`lira_scores`; ``jax.vmap`` over 16 targets at a time, in ``jax.lax.map``), and the
    scores of all (model, example) pairs are pooled by membership (:func:`pool_by_membership`).

    Args:
        confidence: ``[M, N]`` float, ``φ`` of every model on every example.
        masks: bool ``[M, N]``.
        global_variance: as :func:`lira_scores`.

    Returns:
        ``(in_scores, out_scores)``: 1-D NumPy arrays, the scores of pairs where the model trained on
        the example, and of the others (``M · N`` in all).

    Raises:
        ValueError: as :func:`lira_scores`.

    Taught in notebooks/06_auditing.ipynb.
    """
    num_models = np.shape(confidence)[0] if np.ndim(confidence) else 0
    confidence, masks = _check_lira_inputs(confidence, masks, global_variance, range(num_models))
    scores = _lira_every_target(confidence, jnp.asarray(masks), global_variance, min(num_models, 16))
    return pool_by_membership(scores, masks)


def pool_by_membership(scores, masks) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``[M, N]`` scores into those of members (``masks`` True) and non-members, as 1-D arrays.

    Taught in notebooks/06_auditing.ipynb.
    """
    scores = np.asarray(scores)
    masks = _check_masks(masks)
    if scores.shape != masks.shape:
        raise ValueError(f"scores and masks must have the same shape, got {scores.shape} and {masks.shape}")
    return scores[masks], scores[~masks]


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def _check_scores(in_scores, out_scores) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, scores in (("in_scores", in_scores), ("out_scores", out_scores)):
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 1 or scores.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array, got shape {scores.shape}")
        if np.isnan(scores).any():
            raise ValueError(f"{name} holds NaN")
        arrays.append(scores)
    return arrays[0], arrays[1]


def roc_curve(in_scores, out_scores) -> tuple[np.ndarray, np.ndarray]:
    """The empirical ROC curve of "member when score ≥ t", over every threshold ``t``.

    ``FPR(t)`` is the fraction of non-member scores ``≥ t``, ``TPR(t)`` that of member scores, for
    ``t`` every distinct score (high to low), preceded by ``(0, 0)`` (``t = +inf``). Plot it on
    log–log axes (Carlini et al. 2022, §III): the low-FPR corner is where an attack is
    confidently right about some examples. ``jax_privacy.auditing.CanaryScoreAuditor`` (used by
    :func:`attack_summary`) also allows randomising between two neighbouring thresholds, so its
    TPR at a given FPR is the upper concave hull of this curve: equal at the hull's vertices,
    never below the curve.

    Args:
        in_scores: 1-D scores of members.
        out_scores: 1-D scores of non-members.

    Returns:
        ``(fpr, tpr)``: float64 arrays, non-decreasing, from ``(0, 0)`` to ``(1, 1)``.

    Raises:
        ValueError: empty or non-1-D scores, NaN.

    Taught in notebooks/06_auditing.ipynb.
    """
    in_scores, out_scores = _check_scores(in_scores, out_scores)
    thresholds = np.unique(np.concatenate([in_scores, out_scores]))[::-1]
    # Count of scores >= t: len − (number of scores < t), by binary search in the sorted scores.
    tpr = (in_scores.size - np.searchsorted(np.sort(in_scores), thresholds, side="left")) / in_scores.size
    fpr = (out_scores.size - np.searchsorted(np.sort(out_scores), thresholds, side="left")) / out_scores.size
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def attack_summary(in_scores, out_scores, fprs=REPORTED_FPRS) -> dict:
    """TPR at low FPRs and the AUC of an attack, as Carlini et al. 2022 (§III) ask them reported.

    Computed by ``jax_privacy.auditing.CanaryScoreAuditor(in_scores, out_scores)``:
    ``tpr_at_given_fpr`` (the best test thresholding the score, randomising between two
    thresholds where that helps: the concave hull of :func:`roc_curve`) and ``attack_auroc``.
    Chance level: TPR = FPR, AUC = 0.5. An (ε, δ)-DP training algorithm allows at most
    ``TPR ≤ e^ε FPR + δ`` (Kairouz, Oh & Viswanath 2015).

    Args:
        in_scores: 1-D scores of members (higher: more likely a member).
        out_scores: 1-D scores of non-members.
        fprs: the false positive rates in ``[0, 1]`` to report (default 0.1 % and 1 %).

    Returns:
        ``{"tpr_at_fpr_0.001": ..., "tpr_at_fpr_0.01": ..., "auc": ..., "members": ...,
        "non_members": ...}`` (one ``tpr_at_fpr_<fpr>`` per entry of ``fprs``), plain floats / ints.

    Raises:
        ValueError: empty or non-1-D scores, NaN, an FPR outside ``[0, 1]``.

    Taught in notebooks/06_auditing.ipynb.
    """
    from jax_privacy.auditing import CanaryScoreAuditor

    in_scores, out_scores = _check_scores(in_scores, out_scores)
    fprs = tuple(float(f) for f in fprs)
    if any(not 0 <= f <= 1 or math.isnan(f) for f in fprs):
        raise ValueError(f"fprs must be in [0, 1], got {fprs}")
    auditor = CanaryScoreAuditor(in_scores, out_scores)
    summary = {f"tpr_at_fpr_{f:g}": float(auditor.tpr_at_given_fpr(f)) for f in fprs}
    summary["auc"] = float(auditor.attack_auroc())
    summary["members"] = int(in_scores.size)
    summary["non_members"] = int(out_scores.size)
    return summary
