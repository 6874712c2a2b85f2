"""Privacy accounting for DP-SGD: how much ε do T noisy steps spend?

DP-SGD with noise multiplier σ, Poisson sampling rate q and T steps is the T-fold adaptive
composition of the Poisson-subsampled Gaussian mechanism (Abadi et al. 2016). This module gives
five answers to "what (ε, δ) does that satisfy?", from loosest to tightest:

===========  ====================================================================  ==========
accountant   what it does                                                          δ reported
===========  ====================================================================  ==========
``naive``    per-step (ε₀, δ₀) of the Gaussian, basic composition: (Tε₀, Tδ₀);     ``T·δ``
             ignores sampling (as on Abadi et al.'s slides)
``strong``   per-step (ε₀, δ₀), amplification by Poisson sampling, then the        ``Tqδ + δ``
             advanced composition theorem (Dwork, Rothblum & Vadhan 2010) with δ' = δ
``moments``  Abadi et al. (2016)'s moments accountant, integer λ ≤ 32, from scratch  ``δ``
``rdp``      RDP of the Poisson-subsampled Gaussian (Mironov, Talwar & Zhang 2019)   ``δ``
             written from scratch, dp-accounting's orders and RDP→(ε, δ) conversion
``pld``      dp-accounting's privacy-loss-distribution accountant (Koskela et al.    ``δ``
             2020; Doroshenko et al. 2022), discretisation 1e-4
===========  ====================================================================  ==========

For ``naive`` and ``strong`` the per-step guarantee is ``ε₀ = analytic_epsilon(σ, δ₀)`` at
``δ₀ = δ`` (Balle & Wang 2018, exact for every ε₀). The slides' per-step value, ``ε₀ ≈ 1.2``, is
the classic formula :func:`dpedu.mechanisms.classic_epsilon` (Dwork & Roth Thm A.1), which is only
proven for ε₀ < 1; :func:`naive_composition`, :func:`strong_composition` and
:func:`amplify_by_poisson_sampling` take any per-step (ε₀, δ₀), so the slide numbers can be
recomputed with the classic ε₀ (notebooks/02_composition_accounting.ipynb does).

``dp_event`` / ``epsilon_for_event`` describe and account the mechanism that actually ran, with
dp-accounting's RDP or PLD accountant, for either sampler (Poisson, or shuffled fixed-size
batches, which get no amplification).

Host-side NumPy/SciPy code. Taught in notebooks/02_composition_accounting.ipynb.
"""

from __future__ import annotations

import functools
import math

import dp_accounting
import numpy as np
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.pld import privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import special

from dpedu._validation import check_delta, check_epsilon, check_noise_multiplier, check_sampling_rate, check_steps
from dpedu.mechanisms import analytic_epsilon

__all__ = [
    "ACCOUNTANTS",
    "RDP_ORDERS",
    "MOMENTS_MAX_LAMBDA",
    "PLD_VALUE_DISCRETIZATION",
    "naive_composition",
    "strong_composition",
    "strong_composition_simplified",
    "amplify_by_poisson_sampling",
    "moments_log_moments",
    "moments_epsilon",
    "rdp_poisson_gaussian",
    "rdp_to_epsilon",
    "epsilon_and_delta",
    "epsilon",
    "epsilon_curve",
    "calibrate_noise_multiplier",
    "dp_event",
    "epsilon_for_event",
]

ACCOUNTANTS = ("naive", "strong", "moments", "rdp", "pld")

# dp-accounting's DEFAULT_RDP_ORDERS (tests/test_accounting.py checks they agree): fractional
# orders near 1 matter for small ε, large orders for small δ / large σ.
RDP_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024])

# Abadi et al. (2016), Sec. 3.1: "it suffices to compute α(λ) for λ ≤ 32".
MOMENTS_MAX_LAMBDA = 32

# dp-accounting's PLDAccountant default: the "pld" accountant is exactly dp-accounting's.
PLD_VALUE_DISCRETIZATION = 1e-4

# Calibration: σ is searched in this range, to 1 % (returned σ·0.99 no longer meets the target).
_SIGMA_RANGE = (1e-3, 1e8)
_CALIBRATION_TOLERANCE = 0.99


def _check_per_step_epsilon(epsilon) -> float:
    """ε ≥ 0: ε = 0 is a valid per-step guarantee (total variation ≤ δ, e.g. a huge σ)."""
    if not isinstance(epsilon, bool) and epsilon == 0:
        return 0.0
    try:
        return check_epsilon(epsilon)
    except ValueError:
        raise ValueError(f"epsilon must be in [0, inf), got {epsilon!r}") from None


def _check_accountant(accountant, allowed=ACCOUNTANTS) -> str:
    if accountant not in allowed:
        raise ValueError(f"accountant must be one of {allowed}, got {accountant!r}")
    return accountant


# ---------------------------------------------------------------------------------------------
# Classical composition theorems and amplification
# ---------------------------------------------------------------------------------------------


def naive_composition(epsilon: float, delta: float, steps: int) -> tuple[float, float]:
    """Basic composition: T mechanisms that are each (ε, δ)-DP are (Tε, Tδ)-DP.

    Dwork & Roth (2014), Theorem 3.16 (holds for adaptive composition, Dwork et al. 2006).

    Args:
      epsilon: per-step ε ≥ 0.
      delta: per-step δ in (0, 1).
      steps: T ≥ 1.

    Returns:
      ``(T·ε, min(1, T·δ))``.

    Formal guarantees:
      Valid for any T-fold adaptive composition of (ε, δ)-DP mechanisms.

      =====================  =================================================
      input                  behaviour
      =====================  =================================================
      ``T·δ ≥ 1``            δ reported as 1: a true but vacuous guarantee
      bad ε, δ or T          ``ValueError``
      =====================  =================================================

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    epsilon = _check_per_step_epsilon(epsilon)
    delta = check_delta(delta)
    steps = check_steps(steps)
    return steps * epsilon, min(1.0, steps * delta)


def strong_composition(epsilon: float, delta: float, steps: int, delta_prime: float) -> tuple[float, float]:
    """Advanced composition, exact form (Dwork, Rothblum & Vadhan 2010; Dwork & Roth 2014 Thm 3.20).

    T adaptively composed (ε, δ)-DP mechanisms are (ε', Tδ + δ')-DP for every δ' > 0, with
    ``ε' = sqrt(2T ln(1/δ')) ε + T ε (e^ε − 1)``.

    Args:
      epsilon: per-step ε ≥ 0.
      delta: per-step δ in (0, 1).
      steps: T ≥ 1.
      delta_prime: the extra failure probability δ' in (0, 1).

    Returns:
      ``(ε', min(1, T·δ + δ'))``.

    Formal guarantees:
      Valid for adaptive composition. For ε ≳ 1 or small T the second term makes ε' larger than
      basic composition's Tε (both remain valid; take the smaller).

      =====================  =========================================
      input                  behaviour
      =====================  =========================================
      ``T·δ + δ' ≥ 1``       δ reported as 1 (vacuous)
      bad ε, δ, δ' or T      ``ValueError``
      =====================  =========================================

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    epsilon = _check_per_step_epsilon(epsilon)
    delta = check_delta(delta)
    steps = check_steps(steps)
    delta_prime = check_delta(delta_prime)
    return float(_strong_epsilon(epsilon, np.asarray(float(steps)), delta_prime)), min(1.0, steps * delta + delta_prime)


def _strong_epsilon(epsilon: float, steps: np.ndarray, delta_prime: float) -> np.ndarray:
    """ε' of Dwork, Rothblum & Vadhan's theorem, vectorised over T."""
    return np.sqrt(2 * steps * math.log(1 / delta_prime)) * epsilon + steps * epsilon * math.expm1(epsilon)


def strong_composition_simplified(epsilon: float, delta: float, steps: int, delta_prime: float) -> tuple[float, float]:
    """The back-of-the-envelope form ``ε·sqrt(T ln(1/δ'))`` quoted on Abadi et al.'s slides.

    It is the O(·) shape of :func:`strong_composition`, dropping the constant √2 and the
    ``Tε(e^ε − 1)`` term: NOT a theorem and NOT an upper bound (it is below the exact value for
    every input). Kept only to show where the slides' rounded numbers come from.

    Args:
      epsilon: per-step ε ≥ 0.
      delta: per-step δ in (0, 1).
      steps: T ≥ 1.
      delta_prime: δ' in (0, 1).

    Returns:
      ``(ε·sqrt(T ln(1/δ')), min(1, T·δ + δ'))``.

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    epsilon = _check_per_step_epsilon(epsilon)
    delta = check_delta(delta)
    steps = check_steps(steps)
    delta_prime = check_delta(delta_prime)
    return epsilon * math.sqrt(steps * math.log(1 / delta_prime)), min(1.0, steps * delta + delta_prime)


def amplify_by_poisson_sampling(epsilon: float, delta: float, sampling_rate: float) -> tuple[float, float]:
    """Amplification by Poisson subsampling: (ε, δ) → (log(1 + q(e^ε − 1)), qδ).

    Li, Qardaji & Su (2012) Thm 1; Balle, Barthe & Gaboardi (2018) Thm 8 (tight for add/remove).

    Args:
      epsilon: ε ≥ 0 of the mechanism run on the sample.
      delta: its δ in (0, 1).
      sampling_rate: q in (0, 1], each example kept independently with probability q.

    Returns:
      ``(log1p(q·expm1(ε)), q·δ)``: the guarantee w.r.t. the full dataset.

    Formal guarantees:
      Valid for Poisson sampling under add/remove-one neighbouring datasets. NOT valid for
      shuffled fixed-size batches (see :func:`dp_event`).

      =====================  ===================================
      input                  behaviour
      =====================  ===================================
      ``q = 1``              ``(ε, δ)`` unchanged
      ``q → 0``              ``≈ (q(e^ε − 1), qδ)``
      bad ε, δ or q          ``ValueError``
      =====================  ===================================

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    epsilon = _check_per_step_epsilon(epsilon)
    delta = check_delta(delta)
    q = check_sampling_rate(sampling_rate)
    return math.log1p(q * math.expm1(epsilon)), q * delta


# ---------------------------------------------------------------------------------------------
# Integer-order moments of the Poisson-subsampled Gaussian (shared by "moments" and "rdp")
# ---------------------------------------------------------------------------------------------


def _segment_logsumexp(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """log Σ exp over the consecutive segments of ``values`` beginning at ``starts``."""
    peak = np.maximum.reduceat(values, starts)
    lengths = np.diff(np.append(starts, values.size))
    return peak + np.log(np.add.reduceat(np.exp(values - np.repeat(peak, lengths)), starts))


def _log_a_integer(noise_multiplier: float, sampling_rate: float, orders: np.ndarray) -> np.ndarray:
    """log A_α for integer α ≥ 2, exactly, by the binomial expansion.

    With μ₀ = N(0, σ²), μ₁ = N(1, σ²) and μ = (1−q)μ₀ + qμ₁ (the output distribution when the
    differing example is in the batch with probability q),
    ``A_α = E_{μ₀}[(μ/μ₀)^α] = Σ_k C(α,k) (1−q)^{α−k} q^k exp((k² − k) / (2σ²))``
    (Abadi et al. 2016, Appendix B; Mironov, Talwar & Zhang 2019, Sec. 3.3). Summed in log space:
    the terms reach exp(α²/(2σ²)), far beyond float range for small σ. All orders' terms sit in
    one flat array (k = 0..α for each α) so the whole computation is a few vector operations.
    """
    q, sigma = sampling_rate, noise_multiplier
    orders = np.asarray(orders, dtype=np.int64)
    lengths = orders + 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    alpha = np.repeat(orders, lengths).astype(float)
    k = (np.arange(lengths.sum()) - np.repeat(starts, lengths)).astype(float)
    log_terms = (
        special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1)
        + k * math.log(q) + (alpha - k) * math.log1p(-q)
        + (k * k - k) / (2 * sigma * sigma)
    )
    return _segment_logsumexp(log_terms, starts)


_FRACTIONAL_MAX_TERMS = 1000  # as dp-accounting: an order whose series has not converged is dropped
_FRACTIONAL_FIRST_TERMS = 64  # enough for most (σ, q); the rest are redone with all 1000 terms


def _log_a_fractional(noise_multiplier: float, sampling_rate: float, orders: np.ndarray) -> np.ndarray:
    """log A_α for fractional α > 1 by the series of Mironov, Talwar & Zhang (2019), Sec. 3.3.

    A_α splits at z₀ = σ² ln(1/q − 1) + 1/2 into two convergent series,
    ``A₀ = Σ_i C(α,i) q^i (1−q)^{α−i} e^{(i²−i)/(2σ²)} Φ(−(i − z₀)/σ)`` and
    ``A₁ = Σ_i C(α,i) q^{α−i} (1−q)^i e^{(j²−j)/(2σ²)} Φ((j − z₀)/σ)``, j = α − i.
    For i > α the binomial coefficients alternate in sign; like dp-accounting we add their
    magnitudes (|C(α,i)| via log|Γ|), which can only overestimate A_α, keeping ε an upper bound.
    We stop at dp-accounting's rule (both series decreasing and the new terms below e^{-30} of
    the total) and give up on orders that have not converged after 1000 terms (A_α = ∞: the
    order is ignored by the conversion, never under-counted). All orders are summed at once.
    """
    orders = np.asarray(orders, dtype=float)
    log_a = _log_a_fractional_terms(noise_multiplier, sampling_rate, orders, _FRACTIONAL_FIRST_TERMS)
    slow = np.isinf(log_a)
    if slow.any():
        log_a[slow] = _log_a_fractional_terms(noise_multiplier, sampling_rate, orders[slow], _FRACTIONAL_MAX_TERMS)
    return log_a


def _log_a_fractional_terms(sigma: float, q: float, orders: np.ndarray, num_terms: int) -> np.ndarray:
    """:func:`_log_a_fractional` with at most ``num_terms`` terms (``inf`` where not converged)."""
    alpha = orders[:, None]
    i = np.arange(num_terms, dtype=float)[None, :]
    j = alpha - i
    z0 = sigma * sigma * math.log(1 / q - 1) + 0.5
    log_coef = special.gammaln(alpha + 1) - special.gammaln(i + 1) - special.gammaln(j + 1)
    log_s0 = (log_coef + i * math.log(q) + j * math.log1p(-q) + (i * i - i) / (2 * sigma * sigma)
              + special.log_ndtr(-(i - z0) / sigma))
    log_s1 = (log_coef + j * math.log(q) + i * math.log1p(-q) + (j * j - j) / (2 * sigma * sigma)
              + special.log_ndtr((j - z0) / sigma))
    total = np.logaddexp.accumulate(np.logaddexp(log_s0, log_s1), axis=1)
    decreasing = np.zeros_like(log_s0, dtype=bool)
    decreasing[:, 1:] = (log_s0[:, 1:] < log_s0[:, :-1]) & (log_s1[:, 1:] < log_s1[:, :-1])
    converged = decreasing & (np.maximum(log_s0, log_s1) < total - 30)
    first = np.argmax(converged, axis=1)
    rows = np.arange(orders.size)
    return np.where(converged[rows, first], total[rows, first], np.inf)


def rdp_poisson_gaussian(noise_multiplier: float, sampling_rate: float, orders=RDP_ORDERS) -> np.ndarray:
    """Rényi DP of ONE step of the Poisson-subsampled Gaussian, at every order α.

    ``ε_RDP(α) = log(A_α) / (α − 1)`` (Mironov, Talwar & Zhang 2019, Thm 4 / Sec. 3.3): exact
    binomial sum for integer α, their convergent series for fractional α, and ``α/(2σ²)`` for
    q = 1 (Mironov 2017, Prop. 7). The other direction of the divergence (B_α) never exceeds
    A_α for this mechanism (Mironov, Talwar & Zhang 2019, Thm 5), so A_α is the whole story.
    T steps compose by adding: ``T · rdp_poisson_gaussian(...)`` (Mironov 2017, Prop. 1).

    Args:
      noise_multiplier: σ > 0.
      sampling_rate: q in (0, 1].
      orders: RDP orders α > 1 (default: dp-accounting's 156 orders).

    Returns:
      Array of ε_RDP(α), one per order (``inf`` where a fractional series did not converge).

    Formal guarantees:
      The mechanism is (α, ε_RDP(α))-RDP at each order w.r.t. add/remove-one neighbours.

      =====================  ================================================
      input                  behaviour
      =====================  ================================================
      ``q = 1``              ``α / (2σ²)`` (the plain Gaussian)
      order ≤ 1              ``ValueError``
      non-convergent order   ``inf`` (ignored by :func:`rdp_to_epsilon`)
      =====================  ================================================

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    sigma = check_noise_multiplier(noise_multiplier)
    q = check_sampling_rate(sampling_rate)
    orders = np.asarray(orders, dtype=float)
    if orders.ndim != 1 or orders.size == 0 or not np.all(orders > 1) or not np.all(np.isfinite(orders)):
        raise ValueError(f"orders must be a non-empty 1-D sequence of finite numbers > 1, got {orders!r}")
    return _rdp_per_step(sigma, q, tuple(orders.tolist())).copy()


@functools.lru_cache(maxsize=512)
def _rdp_per_step(sigma: float, q: float, orders: tuple) -> np.ndarray:
    orders = np.asarray(orders)
    if q == 1.0:
        return orders / (2 * sigma * sigma)
    is_int = orders == np.round(orders)
    rdp = np.empty_like(orders)
    if is_int.any():
        rdp[is_int] = _log_a_integer(sigma, q, orders[is_int]) / (orders[is_int] - 1)
    if (~is_int).any():
        rdp[~is_int] = _log_a_fractional(sigma, q, orders[~is_int]) / (orders[~is_int] - 1)
    return rdp


def rdp_to_epsilon(orders, rdp, delta: float):
    """Smallest ε over orders for (α, ε_RDP)-RDP → (ε, δ)-DP, the conversion dp-accounting uses.

    ``ε = ε_RDP + log1p(−1/α) − log(δα)/(α − 1)`` (Canonne, Kamath & Steinke 2020, Prop. 12;
    Asoodeh et al. 2021), improving Mironov (2017)'s ``ε_RDP + log(1/δ)/(α − 1)``. As in
    ``dp_accounting.rdp.compute_epsilon``: orders ≤ 1.01 are skipped (numerically unstable), an
    order whose KL bound ``sqrt(1 − e^{−ε_RDP}) < δ`` already holds gives ε = 0, and ε ≥ 0.

    Args:
      orders: RDP orders α > 1, shape (n,).
      rdp: RDP values, shape (n,) or (m, n) (one row per composition, e.g. per T).
      delta: δ in (0, 1).

    Returns:
      ε as a float, or an array of shape (m,) for 2-D ``rdp``.

    Formal guarantees:
      If the mechanism is (α, rdp[α])-RDP at every order, it is (ε, δ)-DP.

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    delta = check_delta(delta)
    orders = np.asarray(orders, dtype=float)
    rdp = np.asarray(rdp, dtype=float)
    if rdp.shape[-1:] != orders.shape or orders.ndim != 1:
        raise ValueError(f"rdp must have the orders' length {orders.shape} in its last axis, got {rdp.shape}")
    if np.any(orders <= 1):
        raise ValueError("orders must all be > 1")
    with np.errstate(invalid="ignore", over="ignore"):
        eps = rdp + np.log1p(-1 / orders) - np.log(delta * orders) / (orders - 1)
        eps = np.where(orders > 1.01, eps, np.inf)
        eps = np.where(delta * delta + np.expm1(-rdp) > 0, 0.0, eps)
        eps = np.where(rdp < 0, 0.0, eps)  # only from round-off on extreme inputs (dp-accounting does the same)
        eps = np.where(np.isnan(eps), np.inf, eps)
    best = np.maximum(0.0, eps.min(axis=-1))
    return float(best) if best.ndim == 0 else best


# ---------------------------------------------------------------------------------------------
# Moments accountant (Abadi et al. 2016)
# ---------------------------------------------------------------------------------------------


def moments_log_moments(noise_multiplier: float, sampling_rate: float, max_lambda: int = MOMENTS_MAX_LAMBDA) -> np.ndarray:
    """Log moments α(λ), λ = 1..max_lambda, of one step of DP-SGD (Abadi et al. 2016, Sec. 3.2).

    ``α(λ) = log E_{o∼μ}[(μ(o)/μ₀(o))^λ] = log A_{λ+1}``, the exact integer-order moment of the
    Poisson-subsampled Gaussian by the binomial expansion (see :func:`rdp_poisson_gaussian`);
    Abadi et al. bounded it by numerical integration, we compute it exactly. (The reverse
    direction μ₀ vs μ is never larger, Mironov, Talwar & Zhang 2019, Thm 5.)

    Args:
      noise_multiplier: σ > 0.
      sampling_rate: q in (0, 1].
      max_lambda: largest λ ≥ 1 (default 32, the paper's choice).

    Returns:
      Array of α(λ) for λ = 1, ..., max_lambda.

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    sigma = check_noise_multiplier(noise_multiplier)
    q = check_sampling_rate(sampling_rate)
    max_lambda = check_steps(max_lambda, name="max_lambda")
    lambdas = np.arange(1, max_lambda + 1, dtype=float)
    # λ·ε_RDP(λ+1) = log A_{λ+1}: the per-step RDP at integer orders, without re-deriving it.
    return lambdas * _rdp_per_step(sigma, q, tuple((lambdas + 1).tolist()))


def moments_epsilon(noise_multiplier: float, sampling_rate: float, steps, delta: float,
                    max_lambda: int = MOMENTS_MAX_LAMBDA):
    """Abadi et al. (2016)'s moments accountant: ``ε = min_λ (T·α(λ) + log(1/δ)) / λ``.

    Composition adds log moments (their Thm 2.1) and the tail bound
    ``δ = min_λ exp(T·α(λ) − λε)`` (Thm 2.2) inverted for ε.

    Args:
      noise_multiplier: σ > 0.
      sampling_rate: q in (0, 1].
      steps: T ≥ 1, or a 1-D array of step counts (vectorised).
      delta: δ in (0, 1).
      max_lambda: largest λ (default 32).

    Returns:
      ε (float, or array like ``steps``).

    Formal guarantees:
      DP-SGD with Poisson sampling is (ε, δ)-DP (add/remove-one). Looser than :func:`rdp_to_epsilon`
      on RDP because it uses only integer orders 2..33 and Mironov (2017)'s basic conversion.

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    delta = check_delta(delta)
    steps_arr = _check_steps_array(steps)
    log_moments = moments_log_moments(noise_multiplier, sampling_rate, max_lambda)
    eps = _moments_tail_bound(log_moments, steps_arr, delta)
    return float(eps) if eps.ndim == 0 else eps


def _moments_tail_bound(log_moments: np.ndarray, steps_arr: np.ndarray, delta: float) -> np.ndarray:
    lambdas = np.arange(1, log_moments.size + 1)
    return ((steps_arr[..., None] * log_moments + math.log(1 / delta)) / lambdas).min(axis=-1)


def _check_steps_array(steps) -> np.ndarray:
    if np.ndim(steps) == 0:
        return np.asarray(float(check_steps(steps)))
    return np.asarray([check_steps(s) for s in np.asarray(steps).ravel()], dtype=float).reshape(np.shape(steps))


# ---------------------------------------------------------------------------------------------
# dp-accounting: events and accountants
# ---------------------------------------------------------------------------------------------


def dp_event(noise_multiplier: float, sampling_rate: float, steps: int, sampler: str = "poisson",
             num_examples: int | None = None) -> dp_accounting.DpEvent:
    """The dp-accounting ``DpEvent`` of the DP-SGD run that actually happened.

    * ``"poisson"``: every step keeps each example independently with probability q →
      ``SelfComposed(PoissonSampled(q, Gaussian(σ)), T)`` (amplification applies).
    * ``"shuffle"``: each epoch a random permutation is cut into fixed-size batches of
      ``q·N`` examples. Shuffling gives no proven amplification for the composed DP-SGD
      (Chua et al. 2024 show Poisson accounting under-reports ε for it), so we use only what
      is certain: an example sits in at most one batch per epoch, so it influences at most
      one noisy sum per epoch, and the epoch's batches (disjoint, parallel composition) cost
      one Gaussian mechanism. With ``E = ceil(T / steps_per_epoch)`` epochs started, the run
      is ``SelfComposed(Gaussian(σ), E)``. ``steps_per_epoch = floor(N / batch)`` with
      ``batch = round(q·N)`` (``floor(1/q)`` without ``num_examples``): the floor over-counts
      epochs if a last partial batch is kept, which is safe. This bound is for neighbouring
      datasets differing in one example's contribution to one batch of fixed size (add/remove
      of a real example in place of a padding/zero example); under replace-one neighbours the
      sensitivity doubles: account with ``noise_multiplier / 2``.

    Args:
      noise_multiplier: σ > 0 (noise std / L2 clip norm).
      sampling_rate: q in (0, 1] (Poisson probability, or batch_size / num_examples).
      steps: T ≥ 1.
      sampler: ``"poisson"`` or ``"shuffle"``.
      num_examples: N ≥ 1, used by ``"shuffle"`` to count steps per epoch.

    Returns:
      A ``dp_accounting.DpEvent``.

    Formal guarantees:
      Accounting the returned event with any dp-accounting accountant gives a valid (ε, δ)
      for the mechanism described above; accounting a shuffled run as ``"poisson"`` does not.

      ==========================  ================================================
      input                       behaviour
      ==========================  ================================================
      ``sampler="poisson"``       T compositions of the subsampled Gaussian
      ``sampler="shuffle"``       ``ceil(T/steps_per_epoch)`` full Gaussians
      unknown ``sampler``         ``ValueError``
      bad σ, q, T, N              ``ValueError``
      ==========================  ================================================

    Taught in notebooks/02_composition_accounting.ipynb and notebooks/03_dpsgd_mnist.ipynb.
    """
    sigma = check_noise_multiplier(noise_multiplier)
    q = check_sampling_rate(sampling_rate)
    steps = check_steps(steps)
    if sampler == "poisson":
        return dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    if sampler == "shuffle":
        if num_examples is None:
            steps_per_epoch = max(1, math.floor(round(1 / q, 9)))  # round: 1/0.01 may be 99.999...
        else:
            num_examples = check_steps(num_examples, name="num_examples")
            batch_size = max(1, round(q * num_examples))
            steps_per_epoch = max(1, num_examples // batch_size)
        epochs = math.ceil(steps / steps_per_epoch)
        return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), epochs)
    raise ValueError(f"sampler must be one of ('poisson', 'shuffle'), got {sampler!r}")


def _dp_accounting_accountant(accountant: str, pld_value_discretization: float = PLD_VALUE_DISCRETIZATION):
    if accountant == "rdp":
        return rdp_privacy_accountant.RdpAccountant(orders=list(RDP_ORDERS))
    return pld_privacy_accountant.PLDAccountant(value_discretization_interval=pld_value_discretization)


def epsilon_for_event(event: dp_accounting.DpEvent, delta: float, accountant: str = "pld",
                      pld_value_discretization: float = PLD_VALUE_DISCRETIZATION) -> float:
    """ε of any ``DpEvent`` at δ, by dp-accounting's RDP or PLD accountant.

    Args:
      event: e.g. from :func:`dp_event`.
      delta: δ in (0, 1).
      accountant: ``"rdp"`` (``RdpAccountant``, default orders) or ``"pld"``
        (``PLDAccountant``, discretisation 1e-4), both add/remove-one neighbouring.
      pld_value_discretization: the PLD's discretisation interval (> 0): coarser is faster and
        still a valid, slightly looser, upper bound (dp-accounting discretises pessimistically);
        notebook 03's widget uses 2e-3, as :func:`epsilon_curve` does.

    Returns:
      ε (``inf`` if the event contains a non-private step).

    Formal guarantees:
      dp-accounting's guarantee: a valid upper bound on ε for the mechanism the event describes.

    Taught in notebooks/02_composition_accounting.ipynb and notebooks/03_dpsgd_mnist.ipynb.
    """
    delta = check_delta(delta)
    _check_accountant(accountant, ("rdp", "pld"))
    if not isinstance(event, dp_accounting.DpEvent):
        raise ValueError(f"event must be a dp_accounting.DpEvent, got {type(event).__name__}")
    interval = check_epsilon(pld_value_discretization, name="pld_value_discretization")
    acct = _dp_accounting_accountant(accountant, interval)
    acct.compose(event)
    return float(acct.get_epsilon(delta))


@functools.lru_cache(maxsize=256)
def _pld_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    # One entry per (σ, q, T, δ): calibration and the CLI ask for the same point more than once.
    return epsilon_for_event(dp_event(sigma, q, steps), delta, "pld")


@functools.lru_cache(maxsize=1024)
def _per_step_epsilon(sigma: float, delta: float) -> float:
    return analytic_epsilon(sigma, delta)


# ---------------------------------------------------------------------------------------------
# The public entry points
# ---------------------------------------------------------------------------------------------


def _epsilon_and_delta_array(sigma, q, steps_arr, delta, accountant):
    """(ε, δ_total) arrays over ``steps_arr`` for one accountant (inputs already validated)."""
    if accountant == "naive":
        eps0 = _per_step_epsilon(sigma, delta)
        return steps_arr * eps0, np.minimum(1.0, steps_arr * delta)
    if accountant == "strong":
        eps1, delta1 = amplify_by_poisson_sampling(_per_step_epsilon(sigma, delta), delta, q)
        return _strong_epsilon(eps1, steps_arr, delta), np.minimum(1.0, steps_arr * delta1 + delta)
    full = np.full_like(steps_arr, delta)
    if accountant == "moments":
        return _moments_tail_bound(moments_log_moments(sigma, q), steps_arr, delta), full
    if accountant == "rdp":
        rdp = _rdp_per_step(sigma, q, RDP_ORDERS)
        return np.asarray(rdp_to_epsilon(RDP_ORDERS, steps_arr[..., None] * rdp, delta)), full
    return np.asarray([_pld_epsilon(sigma, q, int(t), delta) for t in steps_arr.ravel()]).reshape(steps_arr.shape), full


def epsilon_and_delta(noise_multiplier: float, sampling_rate: float, steps: int, delta: float,
                      accountant: str = "pld") -> tuple[float, float]:
    """(ε, total δ) of DP-SGD with Poisson sampling: σ, q, T steps, under one accountant.

    See the module docstring for what each accountant does and which δ it reports: ``delta`` is
    the target δ for ``moments``/``rdp``/``pld``, and the per-step δ₀ (and δ') for
    ``naive``/``strong``, whose total δ is larger.

    Args:
      noise_multiplier: σ > 0.
      sampling_rate: q in (0, 1].
      steps: T ≥ 1.
      delta: δ in (0, 1).
      accountant: one of :data:`ACCOUNTANTS`.

    Returns:
      ``(ε, δ_total)``: DP-SGD is (ε, δ_total)-DP.

    Formal guarantees:
      Every accountant returns a valid upper bound for Poisson-sampled DP-SGD under add/remove-one
      neighbours (``naive`` and ``strong`` are valid but loose). ``rdp`` matches
      dp-accounting's RdpAccountant to well under 0.5 % (tested); ``pld`` IS dp-accounting's
      PLDAccountant.

      =====================  ========================================================
      input                  behaviour
      =====================  ========================================================
      ``q = 1``              no sampling: the plain Gaussian composed T times
      ``naive``, T·δ ≥ 1     δ_total = 1 (vacuous)
      bad σ, q, T, δ          ``ValueError`` naming the argument
      unknown accountant     ``ValueError`` listing :data:`ACCOUNTANTS`
      =====================  ========================================================

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    sigma = check_noise_multiplier(noise_multiplier)
    q = check_sampling_rate(sampling_rate)
    steps = check_steps(steps)
    delta = check_delta(delta)
    _check_accountant(accountant)
    eps, total_delta = _epsilon_and_delta_array(sigma, q, np.asarray(float(steps)), delta, accountant)
    return float(eps), float(total_delta)


def epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float, accountant: str = "pld") -> float:
    """ε of DP-SGD with Poisson sampling (σ, q, T) at δ: ``epsilon_and_delta(...)[0]``.

    Args:
      noise_multiplier: σ > 0.
      sampling_rate: q in (0, 1].
      steps: T ≥ 1.
      delta: δ in (0, 1) (per-step δ for ``naive``/``strong``; see :func:`epsilon_and_delta`).
      accountant: one of :data:`ACCOUNTANTS` (default ``"pld"``, the tightest).

    Returns:
      ε.

    Formal guarantees:
      As :func:`epsilon_and_delta`.

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    return epsilon_and_delta(noise_multiplier, sampling_rate, steps, delta, accountant)[0]


def _halving_grid(max_steps: int) -> np.ndarray:
    """max_steps, max_steps//2, ..., 1 (ascending): log-spaced, and each point is two copies of
    the previous one (plus one step when odd), which is how the PLD curve is composed."""
    grid = [max_steps]
    while grid[-1] > 1:
        grid.append(grid[-1] // 2)
    return np.asarray(grid[::-1])


@functools.lru_cache(maxsize=16)
def _pld_by_squaring(sigma: float, q: float, max_steps: int, interval: float) -> tuple:
    """PLDs of the T-fold subsampled Gaussian for T on :func:`_halving_grid`, by repeated squaring.

    pld(T) = pld(T//2) ∘ pld(T//2) [∘ pld(1) if T is odd]: ~log2(T) FFT compositions give the
    whole curve, with dp-accounting's pessimistic (upper-bounding) discretisation throughout.
    """
    one = privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=sigma, sampling_prob=q, value_discretization_interval=interval)
    plds = [one]
    for t in _halving_grid(max_steps)[1:]:
        half = plds[-1]
        pld = half.compose(half)
        if t % 2:
            pld = pld.compose(one)
        plds.append(pld)
    return tuple(plds)


def epsilon_curve(noise_multiplier: float, sampling_rate: float, max_steps: int, delta: float,
                  accountant: str = "pld", pld_value_discretization: float | None = None):
    """ε after T = 1, ..., max_steps steps (on a log-spaced grid) for one accountant, fast.

    The grid is ``max_steps, max_steps//2, max_steps//4, ..., 1``. RDP and moments are
    computed once per step and scaled by T. ``pld`` composes dp-accounting PLDs by repeated
    squaring (~log2 T compositions for the whole curve, cached per (σ, q, max_steps, grid))
    on a discretisation that is usually COARSER than the ``pld`` accountant's 1e-4: by default
    ``ε_RDP(max_steps)`` (at δ = 1e-5) ``/ 2000`` clipped to [1e-4, 0.05], so the number of PLD points (the run
    time) stays about constant while the grid stays fine relative to ε. dp-accounting's
    discretisation is pessimistic, so every point is still an upper bound, within a few % of the
    1e-4 value in the DP-SGD regime (measured in tests/test_accounting.py).

    Args:
      noise_multiplier: σ > 0.
      sampling_rate: q in (0, 1].
      max_steps: the last T ≥ 1.
      delta: δ in (0, 1) (per-step δ for ``naive``/``strong``).
      accountant: one of :data:`ACCOUNTANTS`.
      pld_value_discretization: PLD discretisation interval (> 0) for ``pld``; ``None``: automatic.

    Returns:
      ``(steps, eps, total_delta)`` arrays.

    Formal guarantees:
      Every point is a valid (ε, δ_total) upper bound, as :func:`epsilon_and_delta`.

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    sigma = check_noise_multiplier(noise_multiplier)
    q = check_sampling_rate(sampling_rate)
    max_steps = check_steps(max_steps, name="max_steps")
    delta = check_delta(delta)
    _check_accountant(accountant)
    steps = _halving_grid(max_steps)
    if accountant == "pld":
        if pld_value_discretization is None:
            # Sized at δ = 1e-5 whatever δ is asked: a new δ then reuses the cached PLDs.
            eps_rdp = float(_epsilon_and_delta_array(sigma, q, np.asarray(float(max_steps)), 1e-5, "rdp")[0])
            interval = float(np.clip(eps_rdp / 2000, 1e-4, 0.05))
        else:
            interval = check_epsilon(pld_value_discretization, name="pld_value_discretization")
        plds = _pld_by_squaring(sigma, q, max_steps, interval)
        eps = np.asarray([p.get_epsilon_for_delta(delta) for p in plds])
        return steps, eps, np.full(steps.shape, delta)
    eps, total_delta = _epsilon_and_delta_array(sigma, q, steps.astype(float), delta, accountant)
    return steps, eps, total_delta


def calibrate_noise_multiplier(target_epsilon: float, sampling_rate: float, steps: int, delta: float,
                               accountant: str = "pld") -> float:
    """The smallest σ (to 1 %) for which DP-SGD (q, T) meets ``target_epsilon`` at δ.

    Brackets σ by doubling/halving from a starting guess (for ``pld``: the RDP answer, which is
    typically within ~10 %), then bisects in log σ until the bracket is within 1 %. ε decreases
    in σ for every accountant.

    Args:
      target_epsilon: ε > 0 to reach.
      sampling_rate: q in (0, 1].
      steps: T ≥ 1.
      delta: δ in (0, 1).
      accountant: one of :data:`ACCOUNTANTS`.

    Returns:
      σ with ``epsilon(σ, ...) ≤ target_epsilon`` and ``epsilon(0.99·σ, ...) > target_epsilon``.

    Raises:
      ValueError: bad input, or no σ in [1e-3, 1e4] reaches the target.

    Formal guarantees:
      Training with the returned σ (or more) is (target_epsilon, δ_total)-DP under the accountant.

    Taught in notebooks/02_composition_accounting.ipynb.
    """
    target = check_epsilon(target_epsilon, name="target_epsilon")
    q = check_sampling_rate(sampling_rate)
    steps = check_steps(steps)
    delta = check_delta(delta)
    _check_accountant(accountant)

    def meets(sigma):
        return epsilon(sigma, q, steps, delta, accountant) <= target

    if accountant == "pld":  # PLD calls are slow: start next to the answer
        hi = calibrate_noise_multiplier(target, q, steps, delta, "rdp")
        return _smallest_sigma(meets, hi * 0.9, hi, target, known_lower_bound=False)
    return _smallest_sigma(meets, 1.0, 1.0, target, known_lower_bound=False)


def _smallest_sigma(meets, lo: float, hi: float, target: float, known_lower_bound: bool) -> float:
    """Bracket-and-bisect shared by the calibrations: the smallest σ (to 1 %) with ``meets(σ)``.

    Doubles ``hi`` until it meets the target; unless ``lo`` is a known lower bound (no smaller σ
    can meet it), halves ``lo`` until it fails; then bisects in log σ. ``meets`` must be monotone
    (ε decreases in σ), which holds for every mechanism here.
    """
    while not meets(hi):
        lo, hi = hi, hi * 2
        if hi > _SIGMA_RANGE[1]:
            raise ValueError(f"target_epsilon={target!r} needs noise_multiplier > {_SIGMA_RANGE[1]:g}; "
                             "choose a larger target_epsilon or fewer steps")
    while not known_lower_bound and meets(lo):
        lo, hi = lo / 2, lo
        if lo < _SIGMA_RANGE[0]:
            raise ValueError(f"target_epsilon={target!r} is met even with noise_multiplier < {_SIGMA_RANGE[0]:g}; "
                             "choose a smaller target_epsilon")
    while lo < _CALIBRATION_TOLERANCE * hi:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return hi


def calibrate_noise_multiplier_for_event(make_event, target_epsilon: float, delta: float,
                                         accountant: str = "pld", lower_bound: float | None = None) -> float:
    """The smallest σ (to 1 %) for which the DpEvent ``make_event(σ)`` meets ``target_epsilon`` at δ.

    For pipelines that are more than Poisson-sampled DP-SGD: DP-SGD composed with a DP-PCA
    (Abadi et al. 2016 §4), shuffled fixed-size batches, or any other ``dp_accounting.DpEvent``
    whose ε decreases in σ. Same search as :func:`calibrate_noise_multiplier`, with dp-accounting's
    accountant of the whole event (:func:`epsilon_for_event`).

    Args:
      make_event: ``σ -> dp_accounting.DpEvent``, the mechanism that will run with noise σ.
      target_epsilon: ε > 0 to reach.
      delta: δ in (0, 1).
      accountant: ``"pld"`` or ``"rdp"`` (dp-accounting's).
      lower_bound: a σ known not to exceed the answer (e.g. the σ for DP-SGD alone, when the
        event adds mechanisms to it): the search starts there and never looks below it.
        None: it starts at σ = 1 and brackets both ways.

    Returns:
      σ with ``ε(make_event(σ)) ≤ target_epsilon``; ``ε(make_event(0.99·σ)) > target_epsilon``
      unless σ equals ``lower_bound``.

    Raises:
      ValueError: bad ε or δ, an unknown accountant, or no σ in [1e-3, 1e8] reaches the target.

    Formal guarantees:
      The returned σ makes ``make_event(σ)`` (target_epsilon, δ)-DP under the accountant: every
      candidate is checked on the event that will be reported, not on an approximation.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    target = check_epsilon(target_epsilon, name="target_epsilon")
    delta = check_delta(delta)
    _check_accountant(accountant, ("rdp", "pld"))

    def meets(sigma):
        return epsilon_for_event(make_event(sigma), delta, accountant) <= target

    if lower_bound is None:
        return _smallest_sigma(meets, 1.0, 1.0, target, known_lower_bound=False)
    start = check_noise_multiplier(lower_bound)
    return _smallest_sigma(meets, start, start, target, known_lower_bound=True)
