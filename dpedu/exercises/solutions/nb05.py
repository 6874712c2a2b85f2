"""Solutions to the exercises of notebooks/05_reconstruction_attack.ipynb.

Try them yourself first. ``tests/test_exercises_nb05.py`` checks each solution with the notebook's
checker (``dpedu.exercises.nb05``).
"""

import math

from scipy import stats

from dpedu import mechanisms


# Exercise 1: success ≤ Φ(μ − Φ⁻¹(1 − 1/m)) ≤ p  <=>  μ = √T/σ ≤ Φ⁻¹(p) + Φ⁻¹(1 − 1/m).
# The T = 40 full-batch steps are one Gaussian with noise multiplier σ/√T: its exact ε at δ.
def noise_for_target():
    p, m, steps, delta = 0.2, 10, 40, 1e-5
    mu = stats.norm.ppf(p) + stats.norm.ppf(1 - 1 / m)
    sigma = math.sqrt(steps) / mu
    return sigma, mechanisms.analytic_epsilon(sigma / math.sqrt(steps), delta)


# Exercise 2: any (ε, δ)-DP release has success ≤ e^ε/m + δ, so an observed success p forces
# ε ≥ ln(m·(p − δ)). With 95 % confidence p is at least the interval's lower end. Since p ≤ 1, no
# attack with m candidates can certify more than ln m (≈ 2.3 for m = 10), whatever the true ε:
# auditing a large ε needs a much larger prior (or a membership test with tiny false-positive rate).
def epsilon_lower_bound(successes, trials, prior_size, delta):
    p_low = stats.beta.ppf(0.025, successes, trials - successes + 1) if successes > 0 else 0.0
    if prior_size * (p_low - delta) <= 1:
        return 0.0  # at or below chance: no evidence against any ε ≥ 0
    return math.log(prior_size * (p_low - delta))


# Exercise 3: the true statements. B: with the candidates known, the adversary only has to decide
# among m noiseless simulations, a test between m hypotheses, which is what the bound is about.
# C: the learned attack reconstructs for any image and blurs under noise. A is false (the noise is
# secret), D is false (the bound covers every adversary that knows D⁻ and the prior), E is false
# (the learned attack is never shown the candidates).
prior_aware_statements = {"B", "C"}
