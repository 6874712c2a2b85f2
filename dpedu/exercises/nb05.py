"""Checkers for the exercises of notebooks/05_reconstruction_attack.ipynb.

Each checker raises :class:`dpedu.exercises.ExerciseError` with a message that names the mistake
(it recognises the typical wrong answers and says what they compute instead); reference solutions
are in ``dpedu/exercises/solutions/nb05.py`` (``dpedu.exercises.show_solution("05", name)``).
"""

from __future__ import annotations

import math

from scipy import stats

from dpedu.exercises import ExerciseError, answered, check_statements

__all__ = ["check_noise_for_target", "check_epsilon_lower_bound", "check_prior_aware_statements",
           "NOISE_TARGET", "noise_for_target"]


def _fail(message: str):
    raise ExerciseError(message)


def _near(a, b, tol):
    return abs(a - b) <= tol * abs(b)


# ---------------------------------------------------------------------------------------------
# Exercise 1: how much noise keeps reconstruction below a target?
# ---------------------------------------------------------------------------------------------

NOISE_TARGET = dict(target_success=0.2, prior_size=10, steps=40, delta=1e-5)


def noise_for_target(target_success=0.2, prior_size=10, steps=40, delta=1e-5) -> tuple[float, float]:
    """``(σ, ε)``: the smallest per-step noise multiplier whose Gaussian bound
    ``Φ(√T/σ − Φ⁻¹(1 − 1/m))`` is at most ``target_success``, and the ε (at δ) that it spends."""
    from dpedu.mechanisms import analytic_epsilon

    mu = stats.norm.ppf(target_success) + stats.norm.ppf(1 - 1 / prior_size)
    sigma = math.sqrt(steps) / mu
    return sigma, analytic_epsilon(sigma / math.sqrt(steps), delta)


def check_noise_for_target(answer) -> None:
    """``answer = (sigma, epsilon)`` for :data:`NOISE_TARGET`, σ within 1 % and ε within 2 %."""
    from dpedu.mechanisms import analytic_epsilon, analytic_noise_multiplier

    s = NOISE_TARGET
    p, m, t, delta = s["target_success"], s["prior_size"], s["steps"], s["delta"]
    try:
        sigma, eps = (float(answered(v)) for v in answer)
    except (TypeError, ValueError):
        _fail("answer with a pair of numbers: (σ per step, ε)")
    want_sigma, want_eps = noise_for_target(**s)
    mu = math.sqrt(t) / want_sigma
    if not _near(sigma, want_sigma, 0.01):
        eps_budget = math.log(m * (p - delta))
        sigma_eps_delta = math.sqrt(t) * analytic_noise_multiplier(eps_budget, delta)
        if _near(sigma, want_sigma / math.sqrt(t), 0.01):
            _fail(f"σ = {sigma:.4g} is σ/√T, the noise multiplier of the ONE Gaussian that the {t} steps compose "
                  "to. Each step needs √T times more")
        if _near(sigma, t / mu, 0.01):
            _fail(f"σ = {sigma:.4g}: T steps of noise multiplier σ compose to μ = √T/σ, not T/σ")
        if _near(sigma, sigma_eps_delta, 0.02):
            _fail(f"σ = {sigma:.4g} comes from the (ε, δ) bound e^ε/m + δ ≤ {p:g} (ε ≤ ln {m * p:g}): valid, but "
                  "that bound ignores which mechanism ran and asks for far more noise than the Gaussian bound")
        bound = stats.norm.cdf(math.sqrt(t) / sigma - stats.norm.ppf(1 - 1 / m)) if sigma > 0 else 1.0
        if bound > p:
            _fail(f"σ = {sigma:.4g} is too little noise: its Gaussian bound is {bound:.3f} > {p:g}")
        _fail(f"σ = {sigma:.4g} keeps the bound at {bound:.3f} ≤ {p:g}, but a smaller σ does too: solve "
              f"Φ(√T/σ − Φ⁻¹(1 − 1/m)) = {p:g} for σ")
    if _near(eps, want_eps, 0.02):
        return
    one_step = analytic_epsilon(want_sigma, delta)
    if _near(eps, one_step, 0.02):
        _fail(f"ε = {eps:.4g} is the ε of ONE step with noise multiplier σ; the run is {t} steps, one Gaussian "
              "with noise multiplier σ/√T")
    if _near(eps, t * one_step, 0.02):
        _fail(f"ε = {eps:.4g} = T × (ε of one step): naive composition, a loose upper bound; the {t} Gaussian "
              "steps are exactly one Gaussian with σ/√T")
    if _near(eps, math.log(m * (p - delta)), 0.02):
        _fail(f"ε = {eps:.4g} = ln(m·({p:g} − δ)) is what the (ε, δ) bound would allow; the question asks the "
              "ε that your σ actually spends (mechanisms.analytic_epsilon of σ/√T)")
    _fail(f"ε = {eps:.4g}: compute the ε at δ = {delta:g} of one Gaussian with noise multiplier σ/√T")


# ---------------------------------------------------------------------------------------------
# Exercise 2: an attack's success as an empirical lower bound on ε
# ---------------------------------------------------------------------------------------------


def _ci_low(successes, trials, level=0.95):
    return stats.beta.ppf((1 - level) / 2, successes, trials - successes + 1) if successes > 0 else 0.0


def _lower_bound(successes, trials, prior_size, delta, p=None):
    p = _ci_low(successes, trials) if p is None else p
    return math.log(prior_size * (p - delta)) if p - delta > 1 / prior_size else 0.0


def check_epsilon_lower_bound(fn) -> None:
    """``fn(successes, trials, prior_size, delta) -> ε_low``: ``max(0, ln(m·(p_low − δ)))`` with
    ``p_low`` the lower end of the 95 % Clopper–Pearson interval of the success rate."""
    cases = ((250, 1000, 10, 1e-5), (196, 200, 10, 1e-5), (107, 1000, 10, 1e-5), (60, 100, 10, 0.05),
             (90, 100, 100, 1e-5))
    for k, n, m, delta in cases:
        got = float(answered(fn(k, n, m, delta)))
        want = _lower_bound(k, n, m, delta)
        if _near(got, want, 1e-3) or (want == 0 and abs(got) < 1e-9):
            continue
        where = f"k = {k} successes of n = {n}, m = {m}, δ = {delta:g}"
        rate = k / n
        if rate - delta > 0 and _near(got, math.log(m * (rate - delta)), 1e-3):
            _fail(f"{where}: you used the observed rate k/n = {rate:.3g}; it is an estimate, and a bound that "
                  "holds with 95 % confidence uses the lower end of its confidence interval")
        one_sided = stats.beta.ppf(0.05, k, n - k + 1)
        if one_sided - delta > 0 and _near(got, math.log(m * (one_sided - delta)), 1e-3):
            _fail(f"{where}: that is a one-sided 95 % limit; use the lower end of the two-sided 95 % interval "
                  "(stats.beta.ppf(0.025, k, n − k + 1)), as the record stores")
        if got < 0:
            _fail(f"{where}: {got:.3g} < 0. A success rate at or below chance proves nothing: the lower bound "
                  "is then 0 (ε ≥ 0 always)")
        p = _ci_low(k, n)
        if p > 0 and _near(got, math.log(m * p), 1e-3):
            _fail(f"{where}: you forgot δ: success ≤ e^ε/m + δ gives ε ≥ ln(m·(p − δ))")
        if p - delta > 0 and _near(got, math.log10(m * (p - delta)), 1e-3):
            _fail(f"{where}: ε is in natural-log units (e^ε): use math.log, not log10")
        _fail(f"{where}: got {got:.4g}, expected {want:.4g}. Invert p ≤ e^ε/m + δ at the interval's lower end")


# ---------------------------------------------------------------------------------------------
# Exercise 3: why does the prior-aware attack beat the learned one?
# ---------------------------------------------------------------------------------------------

_STATEMENTS = {
    "A": (False, "A is false: the prior-aware attack simulates each candidate WITHOUT noise; the noise of "
                 "DP training is drawn fresh and never released, so no adversary knows it"),
    "B": (True, "B is true: knowing the m candidates turns reconstruction into a test between m hypotheses "
                "(is the released model nearest candidate j's model?), exactly the game the bound is about"),
    "C": (True, "C is true: the learned reconstructor maps parameters to an image for ANY missing example; "
                "under noise its best squared-error answer blurs towards an average image"),
    "D": (False, "D is false: the bound holds for EVERY adversary that knows D⁻ and the m candidates, the "
                 "prior-aware one included; its stored success stays under the bound"),
    "E": (False, "E is false: the learned attack never uses the m candidates when it reconstructs; more "
                 "shadow models improve its image but cannot give it the list it is not shown"),
}


def check_prior_aware_statements(answer) -> None:
    """``answer``: the letters of the true statements (a set, list or string such as ``"BC"``)."""
    check_statements(answer, _STATEMENTS)