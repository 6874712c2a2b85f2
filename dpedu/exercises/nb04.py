"""Checkers for the exercises of notebooks/04_cifar10_ladder.ipynb.

Each checker raises :class:`dpedu.exercises.ExerciseError` with a message that names the mistake
(it recognises the typical wrong answers and says what they compute instead); reference solutions
are in ``dpedu/exercises/solutions/nb04.py`` (``dpedu.exercises.show_solution("04", name)``).
"""

from __future__ import annotations

import numpy as np

from dpedu.exercises import ExerciseError, answered

__all__ = ["check_average_then_clip", "check_mixes_examples", "check_batch_size_factors",
           "NORMALISATION_LAYERS", "BATCH_SIZE_SETTING", "batch_size_factors"]


def _fail(message: str):
    raise ExerciseError(message)


# ---------------------------------------------------------------------------------------------
# Exercise 1: augmentation multiplicity, average then clip
# ---------------------------------------------------------------------------------------------


def _clip_rows(x, c):
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x * np.minimum(1.0, c / np.maximum(norms, 1e-30))


def check_average_then_clip(fn) -> None:
    """``fn(per_copy_grads, l2_clip_norm) -> [n, d]``: each example's ``K`` copy gradients
    (``per_copy_grads`` of shape ``[n, K, d]``) averaged, then clipped to norm ``C`` (De et al.
    2022, §3.1; :func:`dpedu.clipping.clipped_grad` with ``augmult=True``).

    Tried on copies that agree (large average) and copies that disagree (small average, large
    copies), where the usual mistakes give different results.
    """
    rng = np.random.default_rng(4)
    n, k, d, c = 6, 8, 5, 1.0
    direction = rng.normal(size=(n, 1, d))
    agree = 3.0 * direction + 0.3 * rng.normal(size=(n, k, d))  # average norm well above C
    disagree = 0.05 * direction + 2.0 * rng.normal(size=(n, k, d))  # copies large, average small
    disagree -= disagree.mean(axis=1, keepdims=True) - 0.05 * direction  # average = 0.05 · direction
    for name, grads in (("copies that agree", agree), ("copies that disagree", disagree)):
        grads = grads.astype(np.float64)
        got = np.asarray(answered(fn(grads.copy(), c)), dtype=np.float64)
        want = _clip_rows(grads.mean(axis=1), c)
        if got.shape != want.shape:
            _fail(f"{name}: return ONE vector per example, shape [n, d] = {want.shape}; got {got.shape}")
        if np.allclose(got, want, rtol=1e-5, atol=1e-7):
            continue
        norms = np.linalg.norm(got, axis=-1)
        clip_then_sum = _clip_rows(grads, c).sum(axis=1)
        mistakes = (
            (clip_then_sum, f"you clipped each copy and added the K = {k} copies up: one example then "
                            f"contributes up to K·C = {k * c:g} (here norm {norms.max():.2f}), so the sensitivity is "
                            "K·C and the noise would have to grow K-fold. Average the copies, THEN clip"),
            (_clip_rows(grads, c).mean(axis=1),
             "you clipped each copy, then averaged: private (norm ≤ C), but not De et al.'s rule. Clipping "
             "the copies separately throws away how they cancel; average first, then clip the average once"),
            (_clip_rows(grads.sum(axis=1), c),
             "you clipped the SUM of the copies, not their average: the sum is K times larger, so it is "
             "clipped even when the average would not be"),
            (_clip_rows(grads.sum(axis=1), c) / k,
             "you clipped the sum, then divided by K: the contribution is then at most C/K, K times too "
             "small (the noise, calibrated to C, swamps it). Average first, then clip to C"),
            (grads.mean(axis=1), "no clipping: the average of the copies can have any norm (here "
                                 f"{norms.max():.2f} > C), so the sensitivity is unbounded"),
            (grads.sum(axis=1), "no clipping, and a sum instead of an average: the sensitivity is unbounded"),
        )
        for value, message in mistakes:
            if np.allclose(got, value, rtol=1e-5, atol=1e-7):
                _fail(f"{name}: {message}")
        if np.any(norms > c * (1 + 1e-5)):
            _fail(f"{name}: an example contributes a vector of norm {norms.max():.3f} > C = {c:g}: "
                  "the sensitivity would not be C")
        _fail(f"{name}: the result differs from clip_C(mean over the K copies) for each example")


# ---------------------------------------------------------------------------------------------
# Exercise 2: the per-example-independence test
# ---------------------------------------------------------------------------------------------


def _group_norm(x, groups=2, eps=1e-5):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    return ((g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + eps)
            ).reshape(x.shape)


def _layer_norm(x, eps=1e-5):
    return (x - x.mean(axis=(1, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(1, 2, 3), keepdims=True) + eps)


def _instance_norm(x, eps=1e-5):
    return (x - x.mean(axis=(1, 2), keepdims=True)) / np.sqrt(x.var(axis=(1, 2), keepdims=True) + eps)


def _batch_norm(x, eps=1e-5):
    return (x - x.mean(axis=(0, 1, 2), keepdims=True)) / np.sqrt(x.var(axis=(0, 1, 2), keepdims=True) + eps)


def _batch_centre(x):
    return x - x.mean(axis=0, keepdims=True)


def _last_example_leak(x):
    # A "ghost" batch statistic taken from the last example of the batch only.
    return _instance_norm(x) + 0.05 * x[-1].mean()


# name -> (layer, mixes examples?, what it does)
NORMALISATION_LAYERS = {
    "group norm": (_group_norm, False, "normalises each example's channel groups over its own pixels"),
    "layer norm": (_layer_norm, False, "normalises each example over all its pixels and channels"),
    "instance norm": (_instance_norm, False, "normalises each example's channels over its own pixels"),
    "batch norm (training mode)": (_batch_norm, True, "normalises each channel with the batch's mean and variance"),
    "batch centring": (_batch_centre, True, "subtracts the batch mean of every activation"),
    "ghost statistic": (_last_example_leak, True, "adds a small statistic of the batch's LAST example"),
}


def check_mixes_examples(test) -> None:
    """``test(layer, batch) -> bool``: whether ``layer`` (a function of a ``[n, h, w, c]`` batch)
    lets the other examples of the batch move example 0's output.

    Tried on the layers of :data:`NORMALISATION_LAYERS` (three per-example layers, three that mix),
    each on two random batches.
    """
    rng = np.random.default_rng(7)
    for name, (layer, mixes, what) in NORMALISATION_LAYERS.items():
        for trial in range(2):
            batch = rng.normal(size=(6, 4, 4, 4))
            got = answered(test(layer, batch.copy()))
            if not isinstance(got, (bool, np.bool_)):
                _fail(f"return True or False (got {type(got).__name__}): does the layer mix examples?")
            if bool(got) == mixes:
                continue
            if mixes:
                hint = (" It mixes through the LAST example only: change ALL the other examples (1 to n−1), "
                        "not just one of them." if name == "ghost statistic" else
                        " Replace the other examples by different values (not a copy of them, not example 0) "
                        "and compare example 0's output before and after.")
                _fail(f"{name} ({what}) mixes examples, but your test says it does not.{hint}")
            _fail(f"{name} ({what}) is per-example, but your test says it mixes examples. Change only the OTHER "
                  "examples (leave example 0 as it is) and compare only example 0's output, with a small "
                  "tolerance (1e-6) for rounding; changing example 0 itself, or comparing the whole batch's "
                  "output, flags every layer.")


# ---------------------------------------------------------------------------------------------
# Exercise 3: larger batches at fixed epochs vs at fixed steps
# ---------------------------------------------------------------------------------------------

BATCH_SIZE_SETTING = dict(num_examples=50_000, epochs=20, small_batch=512, large_batch=4096,
                          target_epsilon=8.0, delta=1e-5, accountant="rdp")


def batch_size_factors(setting=None) -> tuple[float, float]:
    """``(fixed_epochs, fixed_steps)``: how many times smaller σ(B)/B is at the large batch than at
    the small one, (a) at a fixed number of epochs (T = round(epochs·N/B)), (b) at the small batch's
    number of steps. σ calibrated by :func:`dpedu.accounting.calibrate_noise_multiplier`."""
    from dpedu.accounting import calibrate_noise_multiplier

    s = dict(BATCH_SIZE_SETTING, **(setting or {}))
    n, b1, b2 = s["num_examples"], s["small_batch"], s["large_batch"]
    t1, t2 = round(s["epochs"] * n / b1), round(s["epochs"] * n / b2)

    def ratio(b, t):
        return calibrate_noise_multiplier(s["target_epsilon"], b / n, t, s["delta"], s["accountant"]) / b

    return ratio(b1, t1) / ratio(b2, t2), ratio(b1, t1) / ratio(b2, t1)


_FACTORS = None


def check_batch_size_factors(answer) -> None:
    """``answer = (fixed_epochs, fixed_steps)``: the two factors of :func:`batch_size_factors`,
    within 2 %."""
    global _FACTORS
    if _FACTORS is None:
        _FACTORS = batch_size_factors()
    want_epochs, want_steps = _FACTORS
    s = BATCH_SIZE_SETTING
    growth = s["large_batch"] / s["small_batch"]
    try:
        got_epochs, got_steps = (float(answered(v)) for v in answer)
    except (TypeError, ValueError):
        _fail("answer with a pair of numbers: (factor at fixed epochs, factor at fixed steps)")

    def near(a, b, tol=0.02):
        return abs(a / b - 1) <= tol

    for got, want, regime in ((got_epochs, want_epochs, "fixed epochs"), (got_steps, want_steps, "fixed steps")):
        if near(got, want):
            continue
        if near(got_epochs, want_steps) and near(got_steps, want_epochs):
            _fail("your two factors are swapped: at fixed epochs the large batch also takes fewer steps, "
                  "which is the regime where σ(B)/B falls most")
        if near(got, 1 / want):
            _fail(f"{regime}: you gave (σ/B at the large batch) / (σ/B at the small batch) = {got:.3g}; the "
                  "question asks how many times SMALLER it is: the inverse")
        if near(got, growth):
            _fail(f"{regime}: {got:.3g} = {growth:g}, the growth of B: you kept σ fixed. σ must be "
                  "recalibrated for each (q = B/N, T) so that the run still meets ε")
        if near(got, np.sqrt(growth)):
            _fail(f"{regime}: {got:.3g} = √{growth:g}, the rule of thumb σ ∝ √B. Calibrate σ with the accountant: "
                  "at these small σ the rule is far off")
        _fail(f"{regime}: got {got:.4g}. Use T = round(epochs·N/B) steps at fixed epochs and the small batch's T "
              "at fixed steps, q = B/N, σ from accounting.calibrate_noise_multiplier(ε, q, T, δ, 'rdp'), and "
              "the ratio (σ₁/B₁) / (σ₂/B₂)")
