"""Solutions to the exercises of notebooks/05_reconstruction_attack.ipynb.

Try them yourself first. ``tests/test_attacks.py`` checks each solution with the notebook's
checker (``dpedu.exercises``).
"""

import math

import numpy as np
from scipy import stats


# Exercise 1: one example's softmax-regression gradient is ((p − e_y) xᵀ, p − e_y).
def invert_gradient(weight_grad, bias_grad):
    label = int(np.argmin(bias_grad))  # the only negative entry: p_y − 1
    return weight_grad[label] / bias_grad[label], label


# Exercise 2: an (ε, δ)-DP release lets no adversary name the missing example among m candidates
# with probability above e^ε/m + δ (and no probability exceeds 1).
def success_bound(epsilon, delta, prior_size):
    return min(1.0, math.exp(epsilon) / prior_size + delta)


# Exercise 3: T full-batch steps with noise multiplier σ are μ-GDP with μ = √T/σ; the bound is
# 1 − G_μ(1/m) = Φ(μ − Φ⁻¹(1 − 1/m)).
def gaussian_bound(noise_multiplier, steps, prior_size):
    mu = math.sqrt(steps) / noise_multiplier
    return float(stats.norm.cdf(mu - stats.norm.ppf(1 - 1 / prior_size)))
