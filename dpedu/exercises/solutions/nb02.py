"""Solutions to the exercises of notebooks/02_composition_accounting.ipynb.

Try them yourself first. Each answer is checked in the notebook by ``dpedu.exercises.check``;
``dpedu.exercises.show_solution("02", name)`` prints one (name: the answer's variable).
"""

import math

import numpy as np

from dpedu.accounting import strong_composition
from dpedu.mechanisms import analytic_epsilon

# Exercise 1: one Gaussian step is (α, α/(2σ²))-RDP; T = 100 steps add up to ρ(α) = 100·α/(2·10²).
# Convert with ε = ρ(α) + log((α−1)/α) − (log δ + log α)/(α−1) and keep the best α (a fine grid).
rdp_epsilon = min(
    100 * alpha / (2 * 10.0**2) + math.log((alpha - 1) / alpha) - (math.log(1e-5) + math.log(alpha)) / (alpha - 1)
    for alpha in np.linspace(1.01, 100, 100_000))

# Exercise 2: a fraction f of δ = 1e-5 goes to the 100 per-step δ₀'s (100·δ₀ = f·δ), the rest to δ';
# each step is (ε₀(δ₀), δ₀)-DP with the exact ε₀; scan f and keep the split with the smallest ε'.
delta_split = min(
    ((f * 1e-5 / 100, (1 - f) * 1e-5) for f in np.linspace(0.01, 0.99, 197)),
    key=lambda split: strong_composition(analytic_epsilon(10.0, split[0]), split[0], 100, split[1])[0])

# Exercise 3: replace-one moves the clipped sum by up to 2C: each epoch is a Gaussian with noise
# multiplier σ/2 (μ = 2/σ); 10 of them compose to one with μ√10, i.e. noise multiplier σ/(2√10).
replace_one_epsilon = analytic_epsilon(4.0 / (2 * math.sqrt(10)), 1e-5)
