"""Solutions to the exercises of notebooks/02_composition_accounting.ipynb.

Try them yourself first. Each answer is checked in the notebook by ``dpedu.exercises.check``.
"""

import math

from dpedu.accounting import epsilon
from dpedu.mechanisms import analytic_epsilon

# Exercise 1: amplification by Poisson sampling of the exact per-step ε₀ (σ = 4, δ₀ = 1e-5), q = 0.05.
eps0 = analytic_epsilon(4.0, 1e-5)
amplified_epsilon = math.log1p(0.05 * math.expm1(eps0))


# Exercise 2: the smallest σ (to 1 %) with ε ≤ 2 at q = 0.01, T = 10,000, δ = 1e-5 (PLD), by bisection on
# log σ: ε falls as σ grows, and ε(1) > 2 ≥ ε(10) brackets the answer.
def noise_multiplier_for(target_epsilon=2.0, sampling_rate=0.01, steps=10_000, delta=1e-5):
    lo, hi = 1.0, 10.0
    while hi / lo > 1.01:
        mid = math.sqrt(lo * hi)
        if epsilon(mid, sampling_rate, steps, delta) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


noise_multiplier = noise_multiplier_for()
