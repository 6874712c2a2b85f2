"""Solutions to the exercises of notebooks/01_gaussian_mechanism.ipynb.

Try them yourself first. Each answer is checked in the notebook by ``dpedu.exercises.check``;
``dpedu.exercises.show_solution("01", name)`` prints one (name: the answer's variable).
"""

import math

import numpy as np

from dpedu.mechanisms import analytic_delta, analytic_noise_multiplier

# Exercise 1: scan ε > 1 in steps of 0.01 and keep the first ε whose classic σ = √(2 ln(1.25/δ))/ε
# has an exact δ(ε) (Balle & Wang) above δ = 1e-6.
classic_failure = next(
    float(eps) for eps in np.arange(1.0, 30.0, 0.01)
    if analytic_delta(eps, math.sqrt(2 * math.log(1.25 / 1e-6)) / eps) > 1e-6)

# Exercise 2: a family of 4 moves the count by up to 4, so its sensitivity is 4Δ: the Gaussian
# mechanism is (ε, δ)-DP for the family iff σ/4 (the noise in units of 4Δ) is the exact σ for (1, 1e-5).
family_noise = 4 * analytic_noise_multiplier(1.0, 1e-5)

# Exercise 3: Laplace needs scale b = (L1 sensitivity)/ε = √d·C/ε, so standard deviation √2·b; the
# Gaussian needs standard deviation σ·C with the exact σ for (0.5, 1e-5), whatever d. First d where
# Laplace's is larger (C cancels):
laplace_crossover = next(
    d for d in range(1, 10_000) if math.sqrt(2) * math.sqrt(d) / 0.5 > analytic_noise_multiplier(0.5, 1e-5))
