"""Auditing DP-SGD: empirical LOWER bounds on ε from attacks, to set beside the accountant's upper bound.

An audit runs a training algorithm many times with and without one special example (a *canary*),
scores each output (higher: "the canary was in"), and turns the errors of the best threshold test
into a lower bound on ε (Jagielski, Ullman & Oprea 2020; Nasr et al. 2021). It rests on the
hypothesis-testing view of notebook 01: an (ε, δ)-DP mechanism forces every test of D against D'
to satisfy ``FPR + e^ε FNR ≥ 1 − δ`` and ``e^ε FPR + FNR ≥ 1 − δ`` (Kairouz, Oh & Viswanath 2015),
so observed error rates, widened to Clopper–Pearson confidence bounds, rule out every smaller ε.

Two bounds are reported, and they hold under different assumptions:

* :attr:`AuditBound.epsilon`: assumption-free (ε, δ) bound with 95 % confidence over the trials,
  the threshold chosen with a Bonferroni correction over all thresholds. Computed by
  ``jax_privacy.auditing.CanaryScoreAuditor.epsilon_clopper_pearson`` (DeepMind's maintained
  implementation; a dependency rather than our own copy of it);
* :attr:`AuditBound.epsilon_gdp`: Nasr et al. 2023 ("Tight Auditing of Differentially Private
  Machine Learning", §4): if the audited mechanism is μ-GDP (Dong, Roth & Su 2022) — as DP-SGD's
  Gaussian mechanism at sampling rate 1 is exactly — every test satisfies
  ``μ ≥ Φ⁻¹(1 − FPR) − Φ⁻¹(FNR)``; with the error rates' upper confidence bounds this is a lower
  bound on μ, converted to ε at δ. Far fewer trials reach a tight bound, but it is only valid for a
  mechanism whose trade-off curve is Gaussian. (``CanaryScoreAuditor.epsilon_from_gdp`` is not used:
  it takes ``|μ|`` over thresholds, and at extreme thresholds upper bounds on both error rates
  then give large spurious ``|μ|``; on 10,000 Gaussian trials at ε = 1 it returned 1.8.)

White-box *gradient canaries* (Nasr et al. 2021; 2023): the canary's loss is ``s · θ_c`` for one
parameter coordinate ``c``, so its gradient is ``s · e_c`` (a "Dirac" gradient) whatever the model,
clipped by correct DP-SGD to ``C · e_c``; with a coordinate that no data gradient touches (e.g. a
first-layer weight of a pixel that is zero in every image), the canary's coordinate moves only by
the canary and the noise, and the audit is as strong as the hypothesis test can be.

*Auditing in one run* (Steinke, Nasr & Jagielski 2023): ``m`` canaries each included with
probability ½ in ONE training run; the auditor guesses "in" for the highest scores; the number of
correct guesses of an (ε, δ)-DP algorithm is stochastically dominated by ``Binomial(r, e^ε/(1 + e^ε))``
(plus a δ term), which gives a lower bound from one run
(``CanaryScoreAuditor.epsilon_one_run``, the paper's Theorem with δ).

Taught in notebooks/06_auditing.ipynb.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax_privacy import auditing as jp_auditing
from scipy import special, stats

from dpedu import dpsgd, mechanisms, sampling
from dpedu._validation import check_delta, check_sampling_rate, check_steps
from dpedu.progress import progress

PyTree = Any
CONFIDENCE = 0.95
# Share of each side's trials used only to choose the GDP test's threshold (the rest measure it).
THRESHOLD_FRACTION = 0.1


def _check_confidence(confidence) -> float:
    confidence = float(confidence)
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence}; e.g. 0.95")
    return confidence


def _check_scores(name: str, scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of attack scores, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(scores)))} non-finite scores; an audit needs "
                         "a finite score for every trial")
    return scores


def clopper_pearson(successes, trials, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided ``confidence`` interval for a binomial rate (Clopper & Pearson 1934).

    ``[B(α/2; k, n − k + 1), B(1 − α/2; k + 1, n − k)]`` with ``B`` the beta quantile and
    ``α = 1 − confidence``; 0 and 1 at the ends (``k = 0``, ``k = n``).

    Formal guarantees:
        For any true rate ``p``, the interval holds ``p`` with probability at least ``confidence``
        over ``k ~ Binomial(n, p)`` (each one-sided end with at least ``1 − α/2``).

    Args:
        successes: ``k``, integer(s) in ``[0, n]``.
        trials: ``n ≥ 1``.
        confidence: in ``(0.5, 1)``.

    Returns:
        ``(lower, upper)`` arrays (0-d for scalar input).

    Raises:
        ValueError: ``trials < 1`` or ``successes`` outside ``[0, trials]``.

    Taught in notebooks/06_auditing.ipynb.
    """
    k = np.asarray(successes)
    n = np.asarray(trials)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    alpha = 1.0 - _check_confidence(confidence)
    lower = np.where(k == 0, 0.0, stats.beta.ppf(alpha / 2, k, n - k + 1))
    upper = np.where(k == n, 1.0, stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


def epsilon_from_error_rates(false_positive_rate, false_negative_rate, delta: float) -> float:
    """The smallest ε that a test with these error rates does not rule out at ``delta``.

    From (ε, δ)-DP's two inequalities (Kairouz, Oh & Viswanath 2015, Thm 2.1):
    ``ε ≥ max(log((1 − δ − FPR)/FNR), log((1 − δ − FNR)/FPR), 0)``. Plug in the observed rates for a
    point estimate, or their upper confidence bounds for a confident lower bound.

    Edge cases: a zero rate gives ``inf`` where the numerator is positive (no finite ε allows a
    perfect test); rates with ``FPR + FNR ≥ 1 − δ`` give 0 (no better than guessing).

    Args:
        false_positive_rate: FPR in ``[0, 1]``.
        false_negative_rate: FNR in ``[0, 1]``.
        delta: δ in ``(0, 1)``.

    Returns:
        The bound on ε, ``≥ 0`` (``inf`` possible).

    Taught in notebooks/06_auditing.ipynb.
    """
    delta = check_delta(delta)
    fpr, fnr = float(false_positive_rate), float(false_negative_rate)
    if not (0 <= fpr <= 1 and 0 <= fnr <= 1):
        raise ValueError(f"error rates must be in [0, 1], got FPR={fpr}, FNR={fnr}")
    best = 0.0
    for numerator, denominator in ((1 - delta - fpr, fnr), (1 - delta - fnr, fpr)):
        if numerator > 0:
            best = max(best, math.inf if denominator == 0 else math.log(numerator / denominator))
    return best


def gdp_mu_from_error_rates(false_positive_rate, false_negative_rate) -> float:
    """``μ ≥ Φ⁻¹(1 − FPR) − Φ⁻¹(FNR)``: what one test's error rates say about a μ-GDP mechanism.

    Dong, Roth & Su 2022, Eq. (2.3): a μ-GDP mechanism's tests satisfy
    ``FNR ≥ Φ(Φ⁻¹(1 − FPR) − μ)``. Valid ONLY for mechanisms that are μ-GDP for some μ (the
    Gaussian mechanism, full-batch DP-SGD); used by Nasr et al. 2023 for tight audits.

    Returns:
        The implied lower bound on μ (may be ``≤ 0``: no evidence of leakage; ``inf`` for a
        perfect test).

    Taught in notebooks/06_auditing.ipynb.
    """
    return float(special.ndtri(1.0 - float(false_positive_rate)) - special.ndtri(float(false_negative_rate)))


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε at ``delta`` of a μ-GDP mechanism (Dong, Roth & Su 2022, Cor. 2.13); 0 for ``μ ≤ 0``.

    The same curve as the Gaussian mechanism with noise multiplier ``1/μ``
    (:func:`dpedu.mechanisms.analytic_epsilon`, Balle & Wang 2018).

    Taught in notebooks/06_auditing.ipynb.
    """
    delta = check_delta(delta)
    if not mu > 0:
        return 0.0
    if math.isinf(mu):
        return math.inf
    return float(mechanisms.analytic_epsilon(1.0 / mu, delta))


def _error_counts(in_scores: np.ndarray, out_scores: np.ndarray, thresholds: np.ndarray):
    """Guess "in" when score ≥ threshold: (false negatives, false positives) at each threshold."""
    false_negatives = np.searchsorted(np.sort(in_scores), thresholds, side="left")
    false_positives = out_scores.size - np.searchsorted(np.sort(out_scores), thresholds, side="left")
    return false_negatives, false_positives


def _gdp_mu_bounds(in_scores, out_scores, thresholds, confidence):
    false_negatives, false_positives = _error_counts(in_scores, out_scores, thresholds)
    # Each rate's one-sided upper bound at 1 − α/2, so both hold together with probability 1 − α.
    fnr_upper = clopper_pearson(false_negatives, in_scores.size, confidence)[1]
    fpr_upper = clopper_pearson(false_positives, out_scores.size, confidence)[1]
    mu = special.ndtri(1.0 - fpr_upper) - special.ndtri(fnr_upper)
    return mu, fpr_upper, fnr_upper, false_positives, false_negatives


@dataclasses.dataclass(frozen=True)
class AuditBound:
    """The result of :func:`audit`: lower bounds on ε at ``delta`` with ``confidence``.

    Attributes:
        epsilon: assumption-free (ε, δ) lower bound (Clopper–Pearson, Bonferroni over thresholds).
        epsilon_gdp: lower bound valid if the mechanism is μ-GDP (Nasr et al. 2023).
        mu_gdp: the lower bound on μ behind ``epsilon_gdp``.
        threshold: the GDP test's threshold (chosen on a held-out share of the trials).
        false_positive_rate, false_negative_rate: that test's observed rates on the other trials.
        num_in, num_out: trials with and without the canary.
        delta, confidence: as asked.
    """

    epsilon: float
    epsilon_gdp: float
    mu_gdp: float
    threshold: float
    false_positive_rate: float
    false_negative_rate: float
    num_in: int
    num_out: int
    delta: float
    confidence: float


def audit(in_scores, out_scores, *, delta: float, confidence: float = CONFIDENCE, seed: int = 0) -> AuditBound:
    """Lower bounds on ε from attack scores of trials with (``in_scores``) and without the canary.

    Higher scores must mean "in". Two bounds (see the module docstring for what each assumes):
    the assumption-free one by ``jax_privacy``'s ``epsilon_clopper_pearson`` (one-sided, Bonferroni
    over every threshold), and the GDP one: a random ``THRESHOLD_FRACTION`` of each side's trials
    picks the threshold maximising the μ bound, the remaining trials measure that one test.

    Formal guarantees:
        If the trials are independent runs of a mechanism that is (ε, δ)-DP with respect to adding
        the canary, ``epsilon ≤ ε`` with probability at least ``confidence``. If it is μ-GDP,
        ``mu_gdp ≤ μ`` and ``epsilon_gdp ≤ ε(δ)`` with probability at least ``confidence``. DP-SGD
        with sampling rate 1 is μ-GDP with ``μ = √T/σ``; with Poisson sampling (rate < 1) it is NOT
        (its trade-off curve is not Gaussian): ignore ``epsilon_gdp`` there.

    Args:
        in_scores, out_scores: 1-D finite scores, one per trial.
        delta: δ in ``(0, 1)``, the δ of the claim being audited.
        confidence: in ``(0.5, 1)``.
        seed: the split of trials for the GDP threshold.

    Returns:
        An :class:`AuditBound`.

    Raises:
        ValueError: empty, non-1-D or non-finite scores; ``delta`` or ``confidence`` out of range.

    Taught in notebooks/06_auditing.ipynb.
    """
    in_scores = _check_scores("in_scores", in_scores)
    out_scores = _check_scores("out_scores", out_scores)
    delta = check_delta(delta)
    confidence = _check_confidence(confidence)
    epsilon = float(jp_auditing.CanaryScoreAuditor(in_scores, out_scores).epsilon_clopper_pearson(
        1.0 - confidence, delta, one_sided=True))

    rng = np.random.default_rng(seed)
    in_scores, out_scores = rng.permutation(in_scores), rng.permutation(out_scores)
    pick_in = max(1, int(THRESHOLD_FRACTION * in_scores.size))
    pick_out = max(1, int(THRESHOLD_FRACTION * out_scores.size))
    if in_scores.size - pick_in < 1 or out_scores.size - pick_out < 1:
        raise ValueError("an audit needs at least 2 trials on each side (one to pick the threshold, one to "
                         f"measure it); got {in_scores.size} in and {out_scores.size} out")
    candidates = np.unique(np.concatenate([in_scores[:pick_in], out_scores[:pick_out]]))
    mu_candidates = _gdp_mu_bounds(in_scores[:pick_in], out_scores[:pick_out], candidates, confidence)[0]
    threshold = float(candidates[int(np.argmax(mu_candidates))])
    mu, _, _, false_positives, false_negatives = _gdp_mu_bounds(
        in_scores[pick_in:], out_scores[pick_out:], np.array([threshold]), confidence)
    mu_gdp = float(mu[0])
    return AuditBound(
        epsilon=epsilon, epsilon_gdp=gdp_epsilon(mu_gdp, delta), mu_gdp=mu_gdp, threshold=threshold,
        false_positive_rate=float(false_positives[0]) / (out_scores.size - pick_out),
        false_negative_rate=float(false_negatives[0]) / (in_scores.size - pick_in),
        num_in=int(in_scores.size), num_out=int(out_scores.size), delta=delta, confidence=confidence)


# ---------------------------------------------------------------------------------------------
# Gradient canaries
# ---------------------------------------------------------------------------------------------


def with_gradient_canaries(loss_fn: Callable[..., jax.Array], coordinates, *, num_classes: int,
                           canary_gradient_norm: float) -> Callable[..., jax.Array]:
    """A one-example loss in which labels ``num_classes + j`` mark gradient canary ``j``.

    Canary ``j``'s loss is ``s · θ[c_j]`` (``θ`` the flattened parameters, ``c_j = coordinates[j]``,
    ``s = canary_gradient_norm``), so its gradient is the Dirac ``s · e_{c_j}`` whatever its input
    (Nasr et al. 2021, 2023); every other example keeps ``loss_fn``. Pass ``s`` above the clip norm,
    so that correct clipping scales it to exactly ``C``.

    Formal guarantees:
        For labels ``< num_classes`` the result equals ``loss_fn`` (and its gradient); a canary's
        gradient is exactly ``s · e_{c_j}``.

    Args:
        loss_fn: ``loss_fn(params, example_input, example_label) -> scalar``.
        coordinates: ``[m]`` distinct flat parameter indices (``jax.flatten_util.ravel_pytree`` order).
        num_classes: labels below it are data.
        canary_gradient_norm: ``s > 0``.

    Taught in notebooks/06_auditing.ipynb.
    """
    coordinates = jnp.asarray(coordinates, dtype=jnp.int32).reshape(-1)
    if not canary_gradient_norm > 0:
        raise ValueError(f"canary_gradient_norm must be > 0, got {canary_gradient_norm}")
    last = coordinates.shape[0] - 1

    def loss(params, example_input, example_label):
        is_canary = example_label >= num_classes
        canary = jnp.clip(example_label - num_classes, 0, last)
        canary_loss = canary_gradient_norm * ravel_pytree(params)[0][coordinates[canary]]
        data_loss = loss_fn(params, example_input, jnp.where(is_canary, 0, example_label))
        return jnp.where(is_canary, canary_loss, data_loss)

    return loss


def parameter_coordinates(leaf_path: tuple[str, ...], params: PyTree) -> np.ndarray:
    """Flat indices (``jax.flatten_util.ravel_pytree`` order) of every entry of one parameter leaf.

    Args:
        leaf_path: keys to the leaf, e.g. ``("params", "Dense_0", "bias")``.
        params: the parameter pytree.

    Returns:
        ``int64 [leaf.size]``, entry ``i`` the flat index of the leaf's ``i``-th entry (C order).

    Raises:
        ValueError: no leaf at ``leaf_path``.

    Taught in notebooks/06_auditing.ipynb.
    """
    leaf_path = tuple(leaf_path)
    found = []

    # Mark the leaf's entries with their own position and everything else with -1, then flatten the
    # way ravel_pytree does: where the marks land are the flat indices.
    def mark(path, leaf):
        if tuple(getattr(entry, "key", entry) for entry in path) == leaf_path:
            found.append(np.size(leaf))
            return np.arange(np.size(leaf)).reshape(np.shape(leaf))
        return np.full(np.shape(leaf), -1)

    marks = jax.tree_util.tree_map_with_path(mark, params)
    if not found:
        names = [tuple(getattr(e, "key", e) for e in path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
        raise ValueError(f"no parameter at {leaf_path}; the parameters are {names}")
    flat = np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(marks)])
    positions = np.flatnonzero(flat >= 0)
    return positions[np.argsort(flat[positions], kind="stable")].astype(np.int64)


def zero_input_coordinates(kernel_leaf_path: tuple[str, ...], params: PyTree, images) -> np.ndarray:
    """Flat indices of a first Dense layer's weights from input features that are 0 in every image.

    Their data gradient is ``x_k · g = 0`` for every example, so a gradient canary placed there
    moves its coordinate alone: the coordinates Nasr et al. 2023 look for ("the coordinate with the
    smallest gradient"), exact here. Ordered feature by feature.

    Args:
        kernel_leaf_path: keys to the ``[features, units]`` kernel, e.g. ``("params", "Dense_0", "kernel")``.
        params: the parameter pytree.
        images: ``[N, ...]`` the training inputs, flattened to ``features`` per example.

    Returns:
        ``int64`` flat indices into ``ravel_pytree(params)[0]``.

    Raises:
        ValueError: no such leaf, or not a ``[features, units]`` kernel for these images.

    Taught in notebooks/06_auditing.ipynb.
    """
    images = np.asarray(images).reshape(len(images), -1)
    kernel_positions = parameter_coordinates(kernel_leaf_path, params)
    units = kernel_positions.size // images.shape[1] if images.shape[1] else 0
    if units * images.shape[1] != kernel_positions.size or units == 0:
        raise ValueError(f"the parameter at {tuple(kernel_leaf_path)} has {kernel_positions.size} entries; expected "
                         f"a [{images.shape[1]} input features, units] kernel")
    zero_features = np.flatnonzero(np.all(images == 0, axis=0))
    return kernel_positions.reshape(images.shape[1], units)[zero_features].ravel()


def canary_trials(step: dpsgd.TrainStep, init_params: PyTree, inputs, labels, *, canary_input, canary_label: int,
                  canary_in, keys, steps: int, sampling_rate: float, coordinate: int,
                  trials_per_batch: int = 256) -> np.ndarray:
    """Runs training once per trial, with or without the canary, and returns its coordinate's path.

    Each trial: ``steps`` calls of ``step`` (e.g. :func:`dpedu.dpsgd.make_dp_step` on a loss from
    :func:`with_gradient_canaries`, or a broken step from :mod:`dpedu.bugs`) from ``init_params``,
    on the data set plus, where ``canary_in``, the canary; each step's batch is a Poisson sample
    with rate ``sampling_rate`` (every slot kept independently, drawn in JAX: the distribution of
    :func:`dpedu.sampling.poisson_batch_indices`; rate 1 is full batch); the step gets a fresh
    noise key. Trials run ``trials_per_batch`` at a time (``jax.lax.map`` of ``jax.vmap``).

    Returns:
        ``float64 [trials, steps + 1]``: ``θ[coordinate]`` before training and after every step
        (white-box: the auditor sees every released model).

    Taught in notebooks/06_auditing.ipynb.
    """
    steps = check_steps(steps)
    sampling_rate = check_sampling_rate(sampling_rate)
    inputs = jnp.concatenate([jnp.asarray(inputs), jnp.asarray(canary_input)[None]])
    labels = jnp.concatenate([jnp.asarray(labels, jnp.int32), jnp.array([canary_label], jnp.int32)])
    slots = labels.shape[0]
    opt_state = step.optimizer.init(init_params)

    def one_trial(trial):
        present, key = trial
        def one_step(state, step_key):
            params, state_opt = state
            sample_key, noise_key = jax.random.split(step_key)
            mask = jnp.ones(slots, bool).at[-1].set(present)
            if sampling_rate < 1:
                mask = mask & jax.random.bernoulli(sample_key, sampling_rate, (slots,))
            params, state_opt, _ = step.fused(params, state_opt, noise_key, inputs, labels, mask)
            return (params, state_opt), ravel_pytree(params)[0][coordinate]

        _, path = jax.lax.scan(one_step, (init_params, opt_state), jax.random.split(key, steps))
        return jnp.concatenate([ravel_pytree(init_params)[0][coordinate][None], path])

    run = jax.jit(lambda present, trial_keys: jax.lax.map(one_trial, (present, trial_keys),
                                                         batch_size=trials_per_batch))
    return np.asarray(run(jnp.asarray(canary_in, bool), keys), dtype=np.float64)


def total_update_score(paths) -> np.ndarray:
    """``θ₀[c] − θ_T[c]``: how far the coordinate moved against the canary's gradient (SGD)."""
    paths = np.asarray(paths)
    return paths[:, 0] - paths[:, -1]


def update_change_score(paths) -> np.ndarray:
    """``max_t |u_t − u_{t−1}|`` of the coordinate's updates ``u_t = θ_{t+1}[c] − θ_t[c]``.

    Needs every released model. With fresh noise each step the updates differ by noise; with the
    same noise in every step they differ only where the canary was sampled in one step and not the
    next — the statistic that exposes a reused noise key (:func:`dpedu.bugs.make_step_reusing_noise_key`).
    """
    updates = np.diff(np.asarray(paths), axis=1)
    return np.max(np.abs(np.diff(updates, axis=1)), axis=1)


def run_audit(step: dpsgd.TrainStep, init_params: PyTree, inputs, labels, *, canary_input, canary_label: int,
              coordinate: int, trials: int, steps: int, sampling_rate: float, delta: float, seed: int,
              score: Callable[[np.ndarray], np.ndarray] = total_update_score, confidence: float = CONFIDENCE,
              trials_per_batch: int = 256) -> AuditBound:
    """``trials`` runs with the canary and ``trials`` without, scored, then :func:`audit`.

    Taught in notebooks/06_auditing.ipynb.
    """
    trials = check_steps(trials, "trials")
    canary_in = np.repeat([True, False], trials)
    keys = jax.random.split(jax.random.key(seed), 2 * trials)
    paths = canary_trials(step, init_params, inputs, labels, canary_input=canary_input, canary_label=canary_label,
                          canary_in=canary_in, keys=keys, steps=steps, sampling_rate=sampling_rate,
                          coordinate=coordinate, trials_per_batch=trials_per_batch)
    scores = score(paths)
    return audit(scores[canary_in], scores[~canary_in], delta=delta, confidence=confidence, seed=seed)


# ---------------------------------------------------------------------------------------------
# Auditing in one training run (Steinke, Nasr & Jagielski 2023)
# ---------------------------------------------------------------------------------------------


def one_run_epsilon(in_scores, out_scores, *, delta: float, confidence: float = CONFIDENCE) -> float:
    """Steinke, Nasr & Jagielski 2023's lower bound on ε from ONE run's canary scores.

    The auditor guesses "in" for the canaries scoring above a threshold (abstaining on the rest);
    with ``r`` guesses of which ``v`` are right, an (ε, δ)-DP algorithm gives
    ``P[v ≥ v_obs] ≤ P[Binomial(r, e^ε/(1 + e^ε)) ≥ v_obs] + δ-term`` (their Thm 5.2), so each ε
    with a p-value below ``1 − confidence`` is ruled out. Computed by ``jax_privacy``'s
    ``CanaryScoreAuditor.epsilon_one_run`` (one-sided, Bonferroni over thresholds).

    Formal guarantees:
        If each canary was included independently with probability ½ and the algorithm is (ε, δ)-DP
        in each canary, the result is ``≤ ε`` with probability at least ``confidence``.

    Taught in notebooks/06_auditing.ipynb.
    """
    in_scores = _check_scores("in_scores", in_scores)
    out_scores = _check_scores("out_scores", out_scores)
    return float(jp_auditing.CanaryScoreAuditor(in_scores, out_scores).epsilon_one_run(
        1.0 - _check_confidence(confidence), check_delta(delta)))


def train_with_canaries(step: dpsgd.TrainStep, init_params: PyTree, images, labels, *, num_classes: int,
                        canary_in, steps: int, sampling_rate: float, microbatch_size: int, seed: int,
                        show_progress: bool = True) -> PyTree:
    """DP-SGD on ``images`` plus the included canaries, Poisson sampled, as :func:`dpedu.train.train` does.

    The training set is the data followed by one slot per included canary (``canary_in[j]``: label
    ``num_classes + j``, a zero input); each step takes a Poisson batch of it with
    :func:`dpedu.sampling.poisson_batch_indices` (host), cut into micro-batches by
    :func:`dpedu.sampling.pad_to_microbatches`, then ``step`` with a fresh noise key.

    Formal guarantees:
        The mechanism that :func:`dpedu.accounting.dp_event` ``(σ, sampling_rate, steps)`` accounts
        for, with respect to adding or removing any one example or canary, when ``step`` is
        :func:`dpedu.dpsgd.make_dp_step` with noise multiplier σ.

    Returns:
        The trained parameters.

    Taught in notebooks/06_auditing.ipynb.
    """
    steps = check_steps(steps)
    sampling_rate = check_sampling_rate(sampling_rate)
    canary_in = np.asarray(canary_in, bool)
    canary_labels = num_classes + np.flatnonzero(canary_in)
    all_images = np.concatenate([np.asarray(images), np.zeros((canary_labels.size, *np.shape(images)[1:]),
                                                              np.asarray(images).dtype)])
    all_labels = np.concatenate([np.asarray(labels, np.int32), canary_labels.astype(np.int32)])
    rng = np.random.default_rng(seed)
    noise_keys = jax.random.split(jax.random.key(rng.integers(2 ** 31)), steps)
    params, opt_state = init_params, step.optimizer.init(init_params)
    bar = {} if show_progress else {"disable": True}
    for t in progress(range(steps), desc="DP-SGD with canaries", **bar):
        idx, mask = sampling.pad_to_microbatches(sampling.poisson_batch_indices(rng, all_labels.size, sampling_rate),
                                                 microbatch_size)
        params, opt_state, _ = step(params, opt_state, noise_keys[t], all_images[idx], all_labels[idx], mask)
    return params
