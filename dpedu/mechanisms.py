"""The Gaussian mechanism: noise, calibration, privacy loss and hypothesis tests.

Everything here is for ONE release of a query ``f`` with L2 sensitivity ``Δ``: the output is
``f(D) + N(0, (σΔ)²)`` where ``σ`` is the *noise multiplier* (noise standard deviation in units of
the sensitivity). All privacy statements use the add-or-remove-one neighbouring relation (any
relation under which ``‖f(D) − f(D')‖₂ ≤ Δ`` gives the same numbers), and depend on ``σ`` only,
through ``μ = Δ / (σΔ) = 1/σ``.

* Classic calibration, Dwork & Roth (2014), Theorem A.1: ``σ = sqrt(2 ln(1.25/δ)) / ε``, proven
  only for ``ε < 1``.
* Exact ("analytic") calibration, Balle & Wang (2018), Theorem 8: the mechanism is (ε, δ)-DP iff
  ``δ ≥ Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ)``.
* The privacy-loss random variable ``L ~ N(μ²/2, μ²)`` (Dwork & Rothblum 2016; Balle & Wang 2018
  Lemma 3), whose tail gives δ(ε) = E[(1 − e^{ε−L})₊].
* Hypothesis-testing view, Dong, Roth & Su (2019/2022): the Gaussian mechanism is μ-GDP with
  trade-off curve ``β(α) = Φ(Φ⁻¹(1−α) − μ)``, and (ε, δ)-DP means every test has
  ``α + e^ε β ≥ 1 − δ`` and ``e^ε α + β ≥ 1 − δ`` (Kairouz, Oh & Viswanath 2015).

Host-side NumPy/SciPy code. Taught in notebooks/01_gaussian_mechanism.ipynb.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import optimize, special, stats

from dpedu._validation import check_delta, check_epsilon, check_noise_multiplier, check_positive, check_steps

__all__ = [
    "gaussian_mechanism",
    "classic_noise_multiplier",
    "classic_epsilon",
    "analytic_delta",
    "analytic_noise_multiplier",
    "analytic_epsilon",
    "privacy_loss_pdf",
    "sample_privacy_loss",
    "gaussian_tradeoff_curve",
    "epsilon_delta_tradeoff_curve",
]


def _check_array_in(name: str, values, low: float, high: float, *, closed_high: bool = True) -> np.ndarray:
    """``values`` as a float array, every entry in ``[low, high]`` (or ``[low, high)``)."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number or an array of them, got {values!r}") from None
    bad = np.isnan(arr) | (arr < low) | ((arr > high) if closed_high else (arr >= high))
    if np.any(bad):
        bracket = "]" if closed_high else ")"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {arr[bad].ravel()[0]!r}")
    return arr


def _scalar_or_array(arr: np.ndarray):
    return float(arr) if arr.ndim == 0 else arr


# ---------------------------------------------------------------------------------------------
# The mechanism itself
# ---------------------------------------------------------------------------------------------


def gaussian_mechanism(rng: np.random.Generator, value, l2_sensitivity: float, noise_multiplier: float):
    """Releases ``value + N(0, (noise_multiplier · l2_sensitivity)²)`` (Dwork & Roth 2014, Def. A.1).

    Args:
      rng: NumPy random generator (the noise must come from a source the attacker cannot predict;
        a seeded generator is for teaching and tests only).
      value: the exact query answer ``f(D)`` (scalar or array).
      l2_sensitivity: ``Δ = max ‖f(D) − f(D')‖₂`` over neighbouring datasets, > 0.
      noise_multiplier: ``σ``, the noise standard deviation in units of ``Δ``, > 0.

    Returns:
      The noisy answer, same shape as ``value`` (a float for a scalar ``value``).

    Formal guarantees:
      If ``‖f(D) − f(D')‖₂ ≤ l2_sensitivity`` for all neighbours, the release is (ε, δ)-DP for
      every pair with ``δ ≥ analytic_delta(ε, noise_multiplier)`` (Balle & Wang 2018, Thm. 8).
      Nothing is guaranteed if the sensitivity is understated.

      ==========================  ===========================================
      input                       behaviour
      ==========================  ===========================================
      ``l2_sensitivity ≤ 0``      ``ValueError``
      ``noise_multiplier ≤ 0``    ``ValueError`` (σ = 0 is not private)
      array ``value``             independent noise on every coordinate
      ==========================  ===========================================

    Taught in notebooks/01_gaussian_mechanism.ipynb.
    """
    l2_sensitivity = check_positive("l2_sensitivity", l2_sensitivity)
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    value = np.asarray(value, dtype=float)
    noisy = value + rng.normal(0.0, noise_multiplier * l2_sensitivity, size=value.shape)
    return _scalar_or_array(noisy)


# ---------------------------------------------------------------------------------------------
# Classic calibration (Dwork & Roth Thm A.1)
# ---------------------------------------------------------------------------------------------


def classic_noise_multiplier(epsilon: float, delta: float) -> float:
    """Classic calibration ``σ = sqrt(2 ln(1.25/δ)) / ε`` (Dwork & Roth 2014, Theorem A.1).

    Args:
      epsilon: target ε, in (0, 1): the theorem's proof needs ε < 1.
      delta: target δ in (0, 1).

    Returns:
      The noise multiplier σ (noise standard deviation in units of the L2 sensitivity).

    Raises:
      ValueError: for ε ≥ 1. The theorem says nothing there, and for large ε the formula really
        gives too little noise (Balle & Wang 2018, Sec. 3); use :func:`analytic_noise_multiplier`,
        which is exact for every ε.

    Formal guarantees:
      For ε in (0, 1) the Gaussian mechanism with this σ is (ε, δ)-DP. It is never tighter than
      :func:`analytic_noise_multiplier` (which is the smallest σ that works).

      =====================  ======================================
      input                  behaviour
      =====================  ======================================
      ``0 < ε < 1``          ``sqrt(2 ln(1.25/δ)) / ε``
      ``ε ≥ 1``              ``ValueError`` (outside the theorem)
      ``δ ∉ (0, 1)``         ``ValueError``
      =====================  ======================================

    Taught in notebooks/01_gaussian_mechanism.ipynb.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    if epsilon >= 1:
        raise ValueError(
            f"epsilon must be in (0, 1) for the classic calibration (Dwork & Roth Thm A.1), got {epsilon!r}; "
            "use analytic_noise_multiplier for any epsilon"
        )
    return math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def classic_epsilon(noise_multiplier: float, delta: float) -> float:
    """The ε that the classic formula assigns to σ: ``sqrt(2 ln(1.25/δ)) / σ`` (Dwork & Roth Thm A.1).

    This is how papers and slides of the DP-SGD era quote a per-step ε (Abadi et al. 2016's
    slides: σ = 4, δ = 1e-5 gives ε ≈ 1.2).

    Args:
      noise_multiplier: σ > 0.
      delta: δ in (0, 1).

    Returns:
      ``sqrt(2 ln(1.25/δ)) / σ``.

    Warns:
      UserWarning: when the result is ≥ 1: Theorem A.1 does not certify it. Use
        :func:`analytic_epsilon` for a proven (and smaller) value.

    Formal guarantees:
      Only a result < 1 is a proven ε for the Gaussian mechanism at this δ.

      =====================  ==============================================
      input                  behaviour
      =====================  ==============================================
      result < 1             proven (ε, δ)-DP
      result ≥ 1             returned with a ``UserWarning`` (not proven)
      σ ≤ 0, δ ∉ (0, 1)      ``ValueError``
      =====================  ==============================================

    Taught in notebooks/01_gaussian_mechanism.ipynb and notebooks/02_composition_accounting.ipynb.
    """
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    delta = check_delta(delta)
    eps = math.sqrt(2 * math.log(1.25 / delta)) / noise_multiplier
    if eps >= 1:
        warnings.warn(
            f"classic_epsilon = {eps:.4g} >= 1 lies outside Dwork & Roth Thm A.1 (proven for epsilon < 1); "
            "analytic_epsilon gives a proven value",
            UserWarning,
            stacklevel=2,
        )
    return eps


# ---------------------------------------------------------------------------------------------
# Exact calibration (Balle & Wang 2018)
# ---------------------------------------------------------------------------------------------


def _log_analytic_delta(epsilon: np.ndarray, mu: float) -> np.ndarray:
    """log δ(ε) of Balle & Wang (2018) Thm 8, computed in log space.

    δ = Φ(a) − e^ε Φ(b) with a = μ/2 − ε/μ, b = −μ/2 − ε/μ. For small δ both terms are tiny and
    nearly equal, so subtracting them directly loses every digit; log Φ (scipy's log_ndtr) and
    log(1 − e^{x}) = log(−expm1(x)) keep full relative precision down to δ ≈ 1e-300.
    """
    log_first = special.log_ndtr(mu / 2 - epsilon / mu)
    log_second = epsilon + special.log_ndtr(-mu / 2 - epsilon / mu)
    gap = np.minimum(log_second - log_first, 0.0)  # ≤ 0 mathematically; rounding can flip the sign
    with np.errstate(divide="ignore"):
        return log_first + np.log(-np.expm1(gap))


def analytic_delta(epsilon, noise_multiplier: float):
    """Exact δ(ε) of the Gaussian mechanism (Balle & Wang 2018, Theorem 8).

    ``δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ)`` with ``μ = 1/σ`` (``Δ/(σΔ)``).

    Args:
      epsilon: ε ≥ 0, a float or an array (vectorised, e.g. to plot the whole curve).
      noise_multiplier: σ > 0.

    Returns:
      δ(ε), a float or an array shaped like ``epsilon``.

    Formal guarantees:
      The Gaussian mechanism is (ε, δ)-DP if and only if δ ≥ this value: it is the exact
      privacy profile, so every other valid (ε, δ) claim has a larger δ.

      =====================  ==========================================
      input                  behaviour
      =====================  ==========================================
      ``ε = 0``              total variation distance ``2Φ(μ/2) − 1``
      ``ε → ∞``              → 0, never negative
      ``ε < 0``, NaN         ``ValueError``
      ``σ ≤ 0``              ``ValueError``
      =====================  ==========================================

    Taught in notebooks/01_gaussian_mechanism.ipynb.
    """
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    epsilon = _check_array_in("epsilon", epsilon, 0.0, math.inf)
    return _scalar_or_array(np.exp(_log_analytic_delta(epsilon, 1.0 / noise_multiplier)))


def _solve_decreasing(log_delta_of, delta: float, start: float) -> float:
    """The x > 0 where the decreasing function ``log_delta_of(x)`` equals ``log(delta)``, rounded
    UP to the side where ``exp(log_delta_of(x)) ≤ delta`` (so the answer stays a valid bound)."""
    target = math.log(delta)

    def gap(x):  # clipped so that an underflowed δ (log δ = -inf) cannot derail Brent's method
        return max(log_delta_of(x), -1e6) - target

    lo = hi = start
    while gap(lo) <= 0:
        lo /= 2
    while gap(hi) > 0:
        hi *= 2
    root = optimize.brentq(gap, lo, hi, xtol=hi * 1e-15, rtol=1e-13)
    step = abs(root) * 1e-13
    while math.exp(log_delta_of(root)) > delta:  # brentq may stop on the wrong side of the root
        root, step = root + step, step * 2
    return float(root)


def analytic_noise_multiplier(epsilon: float, delta: float) -> float:
    """The smallest σ making the Gaussian mechanism (ε, δ)-DP (Balle & Wang 2018, Theorem 8).

    Solves ``log analytic_delta(ε, σ) = log δ`` for σ (δ(ε) decreases in σ) by Brent's method,
    then rounds σ up to the safe side. Unlike :func:`classic_noise_multiplier` it holds for
    every ε > 0.

    Args:
      epsilon: ε > 0.
      delta: δ in (0, 1).

    Returns:
      σ with ``analytic_delta(ε, σ) ≤ δ`` and equality to ~1e-12 relative.

    Formal guarantees:
      The Gaussian mechanism with noise multiplier ≥ the returned σ is (ε, δ)-DP; any smaller σ
      (beyond the solver's ~1e-13 relative tolerance) is not.

      =====================  ==================================
      input                  behaviour
      =====================  ==================================
      any ε > 0              exact σ (never above the classic σ)
      ε ≤ 0                  ``ValueError``
      δ ∉ (0, 1)             ``ValueError``
      =====================  ==================================

    Taught in notebooks/01_gaussian_mechanism.ipynb.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)

    # log δ is smooth and decreasing in σ; the classic σ is a good starting point for the bracket.
    def log_delta(sigma):
        return float(_log_analytic_delta(np.asarray(epsilon), 1.0 / sigma))

    return _solve_decreasing(log_delta, delta, start=math.sqrt(2 * math.log(1.25 / delta)) / epsilon)


def analytic_epsilon(noise_multiplier: float, delta: float) -> float:
    """The smallest ε for which the Gaussian mechanism with σ is (ε, δ)-DP (Balle & Wang 2018).

    Solves ``analytic_delta(ε, σ) = δ`` for ε (δ(ε) decreases in ε), rounded up to the safe side.

    Args:
      noise_multiplier: σ > 0.
      delta: δ in (0, 1).

    Returns:
      ε ≥ 0 (0 when even ε = 0 meets δ, i.e. the total variation distance is ≤ δ).

    Formal guarantees:
      The mechanism is (ε, δ)-DP with the returned ε and not with any smaller one (to ~1e-13).

      ===========================  ==========================
      input                        behaviour
      ===========================  ==========================
      ``δ ≥ 2Φ(1/(2σ)) − 1``       ``0.0``
      otherwise                    the exact ε > 0
      σ ≤ 0, δ ∉ (0, 1)            ``ValueError``
      ===========================  ==========================

    Taught in notebooks/01_gaussian_mechanism.ipynb and notebooks/02_composition_accounting.ipynb.
    """
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    delta = check_delta(delta)
    mu = 1.0 / noise_multiplier

    def log_delta(eps):
        return float(_log_analytic_delta(np.asarray(eps), mu))

    if log_delta(0.0) <= math.log(delta):
        return 0.0
    return _solve_decreasing(log_delta, delta, start=max(mu, mu * mu))


# ---------------------------------------------------------------------------------------------
# Privacy-loss random variable
# ---------------------------------------------------------------------------------------------


def privacy_loss_pdf(loss, noise_multiplier: float):
    """Density of the Gaussian mechanism's privacy loss ``L ~ N(μ²/2, μ²)``, ``μ = 1/σ``.

    ``L = log p_D(o)/p_D'(o)`` for an output ``o ~ M(D)``, with ``M(D) = N(0, σ²)`` and
    ``M(D') = N(1, σ²)`` (unit sensitivity). (Balle & Wang 2018, Lemma 3; Dwork & Rothblum 2016.)

    Args:
      loss: privacy-loss value(s), any reals.
      noise_multiplier: σ > 0.

    Returns:
      The density at ``loss`` (float or array).

    Taught in notebooks/01_gaussian_mechanism.ipynb.
    """
    mu = 1.0 / check_noise_multiplier(noise_multiplier)
    return _scalar_or_array(stats.norm.pdf(np.asarray(loss, dtype=float), loc=mu * mu / 2, scale=mu))


def sample_privacy_loss(rng: np.random.Generator, noise_multiplier: float, size: int) -> np.ndarray:
    """Draws the privacy loss by running the mechanism: ``o ~ N(0, σ²)``, ``L = log p_D(o)/p_D'(o)``.

    The log density ratio of N(0, σ²) to N(1, σ²) at ``o`` is ``(1 − 2o) / (2σ²)``; its
    distribution is N(μ²/2, μ²) (see :func:`privacy_loss_pdf`), and
    ``E[(1 − e^{ε−L})₊] = analytic_delta(ε, σ)``.

    Args:
      rng: NumPy random generator.
      noise_multiplier: σ > 0.
      size: number of samples, ≥ 1.

    Returns:
      Array of ``size`` privacy-loss samples.

    Taught in notebooks/01_gaussian_mechanism.ipynb.
    """
    sigma = check_noise_multiplier(noise_multiplier)
    size = check_steps(size, name="size")
    outputs = rng.normal(0.0, sigma, size=size)
    return (1.0 - 2.0 * outputs) / (2.0 * sigma * sigma)


# ---------------------------------------------------------------------------------------------
# Hypothesis-testing view
# ---------------------------------------------------------------------------------------------


def gaussian_tradeoff_curve(alpha, noise_multiplier: float):
    """Best type-II error β at type-I error α for telling M(D) from M(D'): ``Φ(Φ⁻¹(1−α) − μ)``.

    An attacker sees one output and tests H0: "the data was D" against H1: "it was D'". By the
    Neyman–Pearson lemma the likelihood-ratio test is optimal, and for the Gaussian mechanism its
    trade-off is the μ-GDP curve of Dong, Roth & Su (2022), Eq. (2.3), with ``μ = 1/σ``.

    Args:
      alpha: type-I error(s) in [0, 1] (float or array).
      noise_multiplier: σ > 0.

    Returns:
      β(α), same shape as ``alpha``.

    Formal guarantees:
      No test of D vs D' from one output of the mechanism has (α, β) below this curve.

    Taught in notebooks/01_gaussian_mechanism.ipynb.
    """
    mu = 1.0 / check_noise_multiplier(noise_multiplier)
    alpha = _check_array_in("alpha", alpha, 0.0, 1.0)
    return _scalar_or_array(special.ndtr(special.ndtri(1.0 - alpha) - mu))


def epsilon_delta_tradeoff_curve(alpha, epsilon: float, delta: float):
    """Lowest β that (ε, δ)-DP allows at type-I error α: ``max(0, 1−δ−e^ε α, e^{−ε}(1−δ−α))``.

    (ε, δ)-DP is equivalent to every test satisfying ``α + e^ε β ≥ 1 − δ`` and
    ``e^ε α + β ≥ 1 − δ`` (Kairouz, Oh & Viswanath 2015, Thm 2.1; Dong, Roth & Su 2022, Eq. (2.5)).

    Args:
      alpha: type-I error(s) in [0, 1].
      epsilon: ε > 0.
      delta: δ in (0, 1).

    Returns:
      The lower bound on β, same shape as ``alpha``.

    Formal guarantees:
      A mechanism is (ε, δ)-DP iff its trade-off curve lies on or above this one.

    Taught in notebooks/01_gaussian_mechanism.ipynb.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    alpha = _check_array_in("alpha", alpha, 0.0, 1.0)
    beta = np.maximum.reduce(
        [np.zeros_like(alpha), 1 - delta - math.exp(epsilon) * alpha, math.exp(-epsilon) * (1 - delta - alpha)]
    )
    return _scalar_or_array(beta)
