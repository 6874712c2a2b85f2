"""Checkers for the exercises of notebooks/02_composition_accounting.ipynb.

Each ``check_*(answer)`` raises :class:`dpedu.exercises.ExerciseError` with a message naming the
mistake; use them through ``dpedu.exercises.check(title, answer, checker)``. Reference solutions:
``dpedu/exercises/solutions/nb02.py`` (``dpedu.exercises.show_solution("02", name)``).
"""

from __future__ import annotations

import functools
import math

from dpedu import accounting, mechanisms
from dpedu.exercises import ExerciseError, as_number

__all__ = ["RDP_EXERCISE", "rdp_epsilon", "check_rdp_epsilon", "SPLIT_EXERCISE", "strong_epsilon_for_split",
           "best_split", "check_delta_split", "REPLACE_ONE_EXERCISE", "check_replace_one_epsilon"]


def _minimise(f, lo: float, hi: float) -> float:
    from scipy import optimize

    return float(optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6}).fun)


# Exercise 1: T full-batch Gaussian steps (q = 1), composed in RDP by hand, converted to (ε, δ).
RDP_EXERCISE = dict(noise_multiplier=10.0, steps=100, delta=1e-5)


def rdp_epsilon(conversion: str = "improved", factor: float = 0.5, steps: int | None = None) -> float:
    """ε of :data:`RDP_EXERCISE` from RDP ρ(α) = T·factor·α/σ² (factor 1/2 is right), best α."""
    sigma, delta = RDP_EXERCISE["noise_multiplier"], RDP_EXERCISE["delta"]
    steps = RDP_EXERCISE["steps"] if steps is None else steps

    def eps(alpha):
        rho = steps * factor * alpha / sigma**2
        if conversion == "classic":
            return rho + math.log(1 / delta) / (alpha - 1)
        return rho + math.log((alpha - 1) / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)

    return _minimise(eps, 1.0001, 1e5)


def check_rdp_epsilon(answer) -> None:
    """ε (within 1 % above the best RDP bound) of T = 100 Gaussian steps with σ = 10 at δ = 1e-5."""
    eps = as_number(answer, "an ε")
    sigma, steps, delta = RDP_EXERCISE["noise_multiplier"], RDP_EXERCISE["steps"], RDP_EXERCISE["delta"]
    want = rdp_epsilon()
    if want * (1 - 1e-4) <= eps <= want * 1.01:
        return
    near = functools.partial(math.isclose, eps, rel_tol=1e-2)
    if near(rdp_epsilon("classic")):
        raise ExerciseError("that is Mironov's classic conversion ε = ρ(α) + log(1/δ)/(α−1); use the improved one, "
                            "ρ(α) + log((α−1)/α) − (log δ + log α)/(α−1)")
    if near(rdp_epsilon(steps=1)):
        raise ExerciseError("that is ONE step's ε: RDP composes by adding, so T steps have ρ(α) = T·α/(2σ²)")
    if near(rdp_epsilon(factor=1.0)):
        raise ExerciseError("the Gaussian's RDP is ρ(α) = α/(2σ²) per step: you dropped the 2")
    if near(mechanisms.analytic_epsilon(sigma / math.sqrt(steps), delta)):
        raise ExerciseError("that is the EXACT ε (T Gaussians compose to one with σ/√T; PLD gives it too), smaller "
                            "than RDP can prove: the exercise asks for the RDP route")
    if eps < want:
        raise ExerciseError(f"{eps:.4g} is below what RDP can prove ({want:.4g} is the best over α): check ρ(α) and "
                            "the conversion")
    raise ExerciseError(f"{eps:.4g} is a valid bound but not the best: minimise the conversion over α "
                        "(the best α is not an integer near 32; try a fine grid or scipy)")


# Exercise 2: the δ split of strong composition, T Gaussian steps without subsampling.
SPLIT_EXERCISE = dict(noise_multiplier=10.0, steps=100, delta=1e-5)


def strong_epsilon_for_split(delta0: float, delta_prime: float) -> float:
    """ε' of strong composition of T steps, each (ε₀(δ₀), δ₀)-DP with the exact ε₀ of σ."""
    sigma, steps = SPLIT_EXERCISE["noise_multiplier"], SPLIT_EXERCISE["steps"]
    eps0 = mechanisms.analytic_epsilon(sigma, delta0)
    return accounting.strong_composition(eps0, delta0, steps, delta_prime)[0]


@functools.lru_cache(maxsize=1)
def best_split() -> tuple[float, float]:
    """(best fraction of δ given to the T per-step δ₀'s, the ε' it gives)."""
    from scipy import optimize

    steps, delta = SPLIT_EXERCISE["steps"], SPLIT_EXERCISE["delta"]
    res = optimize.minimize_scalar(lambda f: strong_epsilon_for_split(f * delta / steps, (1 - f) * delta),
                                   bounds=(1e-4, 1 - 1e-4), method="bounded", options={"xatol": 1e-5})
    return float(res.x), float(res.fun)


def check_delta_split(answer) -> None:
    """``(delta0, delta_prime)``: per-step δ₀ and the δ' of strong composition, with Tδ₀ + δ' ≤ 1e-5
    and ε' within 0.3 % of the best split's."""
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise ExerciseError(f"answer with a pair (delta0, delta_prime), got {answer!r}")
    delta0, delta_prime = (as_number(x, "a δ") for x in answer)
    steps, delta = SPLIT_EXERCISE["steps"], SPLIT_EXERCISE["delta"]
    if not (0 < delta0 < 1 and 0 < delta_prime < 1):
        raise ExerciseError("both δ₀ and δ' must be in (0, 1): with δ₀ = 0 the per-step ε₀ is infinite")
    total = steps * delta0 + delta_prime
    if total > delta * (1 + 1e-9):
        hint = " (each of the T steps spends its own δ₀: the total is Tδ₀ + δ')" if delta0 + delta_prime <= delta * (1 + 1e-9) else ""
        raise ExerciseError(f"Tδ₀ + δ' = {total:.3g} exceeds the budget δ = {delta:g}{hint}")
    fraction, best = best_split()
    got = strong_epsilon_for_split(delta0, delta_prime)
    if got <= best * 1.003:
        return
    mine = steps * delta0 / delta
    side = "the per-step δ₀'s (Tδ₀)" if mine < fraction else "δ'"
    equal = " An equal split is close, not best." if math.isclose(mine, 0.5, abs_tol=0.02) else ""
    raise ExerciseError(f"your split gives ε' = {got:.4g}; a better one reaches {best:.4g}: give {side} a larger "
                        f"share of δ.{equal}")


# Exercise 3: shuffled batches under replace-one neighbours.
REPLACE_ONE_EXERCISE = dict(noise_multiplier=4.0, epochs=10, delta=1e-5)


def check_replace_one_epsilon(answer) -> None:
    """ε (to 0.1 %) of E epochs of shuffled fixed-size batches (one Gaussian per epoch per example)
    under REPLACE-one neighbours, clip norm C, noise σC."""
    eps = as_number(answer, "an ε")
    sigma, epochs, delta = (REPLACE_ONE_EXERCISE[k] for k in ("noise_multiplier", "epochs", "delta"))
    want = mechanisms.analytic_epsilon(sigma / (2 * math.sqrt(epochs)), delta)
    if math.isclose(eps, want, rel_tol=1e-3):
        return
    near = functools.partial(math.isclose, eps, rel_tol=1e-2)
    if near(mechanisms.analytic_epsilon(sigma / math.sqrt(epochs), delta)):
        raise ExerciseError("that is the add/remove (zero-out) answer with sensitivity C; replacing one example by "
                            "another moves the clipped sum by up to 2C, so the noise multiplier is σ/2")
    if near(mechanisms.analytic_epsilon(sigma / (2 * epochs), delta)):
        raise ExerciseError("E Gaussians with μ each compose to μ√E (the loss variances add), not μ·E")
    if near(epochs * mechanisms.analytic_epsilon(sigma / 2, delta / epochs)):
        raise ExerciseError("that is naive composition of per-epoch (ε, δ/E) guarantees: valid but loose; compose "
                            "the Gaussians exactly (one Gaussian with σ/(2√E))")
    if near(accounting.epsilon(sigma / 2, 0.01, 100 * epochs, delta, "pld")):
        raise ExerciseError("that is Poisson-subsampled accounting: shuffled batches get no proven amplification")
    raise ExerciseError(f"{eps:.4g} is not it: per epoch one Gaussian of sensitivity 2C and noise σC; E of them "
                        "compose to one Gaussian")
