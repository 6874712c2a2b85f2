"""Solutions to the exercises of notebooks/04_cifar10_ladder.ipynb.

Try them yourself first. ``tests/test_exercises_nb04.py`` checks each solution with the notebook's
checker (``dpedu.exercises.nb04``).
"""

import numpy as np

from dpedu import accounting


# Exercise 3: average the K copies' gradients of each example, THEN clip the average to norm C:
# one vector of norm <= C per example, so the sensitivity stays C whatever K is.
def average_then_clip(per_copy_grads, l2_clip_norm):
    average = per_copy_grads.mean(axis=1)  # [n, d]
    norms = np.linalg.norm(average, axis=1, keepdims=True)
    return average * np.minimum(1.0, l2_clip_norm / np.maximum(norms, 1e-12))


# Exercise 1: change every OTHER example (never example 0), compare example 0's output only.
def mixes_examples(layer, batch):
    others_changed = np.array(batch, copy=True)
    others_changed[1:] = 3.0 + 5.0 * np.random.default_rng(0).normal(size=batch[1:].shape)
    return bool(np.max(np.abs(layer(batch)[0] - layer(others_changed)[0])) > 1e-6)


# Exercise 2: N = 50,000, 20 epochs, ε = 8, δ = 1e-5 (RDP), B = 512 -> 4096. Answer with the pair
# batch_size_factors() (about (4.8, 2.2)). At fixed epochs the large batch also takes 8x fewer
# steps, so σ grows much more slowly than B; at fixed steps the same number of steps now each sample
# 8x more often, and σ must grow much more. Neither is the 1/√B rule (√8 ≈ 2.8): at σ below 1
# that approximation is far off.
def batch_size_factors():
    n = 50_000

    def noise_per_signal(batch_size, steps):
        sigma = accounting.calibrate_noise_multiplier(8.0, batch_size / n, steps, 1e-5, "rdp")
        return sigma / batch_size

    steps_small, steps_large = round(20 * n / 512), round(20 * n / 4096)  # fixed epochs: T = epochs·N/B
    fixed_epochs = noise_per_signal(512, steps_small) / noise_per_signal(4096, steps_large)
    fixed_steps = noise_per_signal(512, steps_small) / noise_per_signal(4096, steps_small)
    return fixed_epochs, fixed_steps
