"""Checkers for the exercises of notebooks/01_gaussian_mechanism.ipynb.

Each ``check_*(answer)`` raises :class:`dpedu.exercises.ExerciseError` with a message naming the
mistake; use them through ``dpedu.exercises.check(title, answer, checker)``. Reference solutions:
``dpedu/exercises/solutions/nb01.py`` (``dpedu.exercises.show_solution("01", name)``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from dpedu import mechanisms
from dpedu.exercises import ExerciseError, as_number

__all__ = ["classic_failure_epsilon", "check_classic_failure", "FAMILY", "check_family_noise",
           "LAPLACE_VS_GAUSSIAN", "check_laplace_crossover"]


def _classic_excess(eps: float, delta: float) -> float:
    """δ(ε) of the classic σ for (ε, δ), minus δ: > 0 where the formula is no longer (ε, δ)-DP."""
    return float(mechanisms.analytic_delta(eps, math.sqrt(2 * math.log(1.25 / delta)) / eps)) - delta


@functools.lru_cache(maxsize=8)
def classic_failure_epsilon(delta: float) -> float:
    """The smallest ε ≥ 1 at which σ = √(2 ln(1.25/δ))/ε stops being (ε, δ)-DP (exact δ(ε) of
    Balle & Wang), to 1e-6."""
    from scipy import optimize

    grid = np.linspace(1.0, 60.0, 5901)
    excess = np.array([_classic_excess(e, delta) for e in grid])
    first = int(np.argmax(excess > 0))
    return float(optimize.brentq(_classic_excess, grid[first - 1], grid[first], args=(delta,), xtol=1e-6))


# Exercise 1: where the classic calibration stops being DP at δ = 1e-6 (to within 0.05).
def check_classic_failure(answer) -> None:
    """The ε (to ±0.05) where the classic formula stops being (ε, 1e-6)-DP."""
    eps = as_number(answer, "an ε")
    want = classic_failure_epsilon(1e-6)
    if abs(eps - want) <= 0.05:
        return
    if abs(eps - classic_failure_epsilon(1e-5)) <= 0.05:
        raise ExerciseError(f"{eps:.3g} is where the formula fails at δ = 1e-5 (the cell above); the exercise asks for δ = 1e-6")
    if abs(eps - 1.0) <= 0.05:
        raise ExerciseError("ε = 1 is where the theorem's PROOF stops, not where the formula fails: compare the exact "
                            "δ(ε) of the classic σ (mechanisms.analytic_delta) with 1e-6 for ε > 1")
    if eps < 1:
        raise ExerciseError(f"below ε = 1 the theorem holds, so the formula is DP at ε = {eps:.3g}; search ε > 1")
    excess = _classic_excess(eps, 1e-6)
    if excess <= 0:
        raise ExerciseError(f"at ε = {eps:.3g} the classic σ still gives δ = {excess + 1e-6:.3g} ≤ 1e-6: it is still DP "
                            "there; the failure comes at a larger ε")
    raise ExerciseError(f"at ε = {eps:.3g} the classic σ gives δ = {excess + 1e-6:.3g} > 1e-6, but it already failed at a "
                        "smaller ε: find the FIRST ε where the exact δ exceeds 1e-6")


# Exercise 2: the noise multiplier for a count that protects a family of k people.
FAMILY = dict(size=4, epsilon=1.0, delta=1e-5)


def check_family_noise(answer) -> None:
    """σ (in units of ONE person's sensitivity Δ = 1, to 0.5 %) making the count (1, 1e-5)-DP for groups of 4."""
    sigma = as_number(answer, "a noise multiplier σ")
    k, eps, delta = FAMILY["size"], FAMILY["epsilon"], FAMILY["delta"]
    one = mechanisms.analytic_noise_multiplier(eps, delta)
    want = k * one
    if sigma <= 0:
        raise ExerciseError(f"σ must be > 0, got {sigma:g}")
    if math.isclose(sigma, want, rel_tol=5e-3):
        return
    if math.isclose(sigma, one, rel_tol=5e-3):
        raise ExerciseError(f"σ = {sigma:.4g} protects ONE person; a family of {k} can move the count by {k}: "
                            f"the group's sensitivity is {k}Δ")
    if math.isclose(sigma, math.sqrt(k) * one, rel_tol=5e-3):
        raise ExerciseError(f"you scaled by √{k}: a group of {k} moves a count by up to {k} (their changes add up "
                            "in the same coordinate), so the sensitivity is kΔ, not √k·Δ")
    generic = mechanisms.analytic_noise_multiplier(eps / k, delta / (k * math.exp((k - 1) * eps / k)))
    if math.isclose(sigma, generic, rel_tol=5e-3):
        raise ExerciseError("that is the generic group-privacy route ((ε/k, δ/(k e^{(k−1)ε/k})) per person): valid, "
                            f"but {100 * (generic / want - 1):.1f} % more noise than needed; for the Gaussian "
                            "mechanism a group is just sensitivity kΔ, calibrate that exactly")
    if math.isclose(sigma, k * mechanisms.classic_noise_multiplier(0.999999, delta), rel_tol=2e-2):
        raise ExerciseError("that is the classic calibration (and ε = 1 is outside its theorem): use the exact one")
    family_delta = float(mechanisms.analytic_delta(eps, sigma / k))
    if family_delta > delta:
        raise ExerciseError(f"not enough noise: with σ = {sigma:.4g} the family (sensitivity {k}Δ) has δ = "
                            f"{family_delta:.2g} > {delta:g} at ε = {eps:g}")
    raise ExerciseError(f"σ = {sigma:.4g} is (ε, δ)-DP for the family but more noise than needed (δ = {family_delta:.2g})")


# Exercise 3: from which dimension d does Laplace need more noise per coordinate than Gaussian?
LAPLACE_VS_GAUSSIAN = dict(epsilon=0.5, delta=1e-5)


def laplace_crossover() -> int:
    """Smallest d with Laplace std per coordinate (√2·√d·C/ε) > Gaussian std (σ(ε, δ)·C, exact σ)."""
    eps, delta = LAPLACE_VS_GAUSSIAN["epsilon"], LAPLACE_VS_GAUSSIAN["delta"]
    sigma = mechanisms.analytic_noise_multiplier(eps, delta)
    return math.floor((sigma * eps) ** 2 / 2) + 1


def check_laplace_crossover(answer) -> None:
    """The smallest dimension d at which the Laplace mechanism (pure ε = 0.5) adds more noise std per
    coordinate than the exact Gaussian mechanism at (0.5, 1e-5), both on an L2-clipped vector."""
    d = as_number(answer, "a dimension d")
    if d != int(d) or d < 1:
        raise ExerciseError(f"d is a dimension: a positive whole number, got {answer!r}")
    d = int(d)
    eps, delta = LAPLACE_VS_GAUSSIAN["epsilon"], LAPLACE_VS_GAUSSIAN["delta"]
    want = laplace_crossover()
    if d == want:
        return
    sigma = mechanisms.analytic_noise_multiplier(eps, delta)
    if d == math.floor((sigma * eps) ** 2) + 1:
        raise ExerciseError("you compared the Laplace SCALE b = √d·C/ε with the Gaussian's standard deviation; "
                            "the Laplace distribution's standard deviation is √2·b")
    classic = mechanisms.classic_noise_multiplier(eps, delta)
    if d in (math.floor((classic * eps) ** 2 / 2) + 1, math.floor((classic * eps) ** 2) + 1):
        raise ExerciseError("you used the classic Gaussian calibration; compare with the exact (analytic) σ, the "
                            "least noise the Gaussian needs")
    if d == math.floor(sigma * eps / math.sqrt(2)) + 1:
        raise ExerciseError("you took the L1 sensitivity as d·C: a vector of L2 norm ≤ C has L1 norm at most √d·C "
                            "(all coordinates equal to C/√d)")
    if d == want - 1:
        raise ExerciseError(f"at d = {d} the Laplace noise is still smaller: the exercise asks for the first d where "
                            "it is LARGER")
    raise ExerciseError(f"d = {d} is not the crossover: compare √2·√d·C/ε (Laplace std, L1 sensitivity √d·C) with "
                        "σ·C (Gaussian std, L2 sensitivity C, exact σ)")
