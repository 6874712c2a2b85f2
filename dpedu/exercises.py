"""Automatic checkers for the notebooks' exercises: "not done yet", "wrong, because ...", or "correct".

Every exercise cell in a notebook is committed unsolved, its answer left as ``...``. Calling
:func:`check` on it then prints a "not done yet" line and returns False, so the notebook still
runs from top to bottom (CI executes it under nbval). A wrong answer raises :class:`ExerciseError`
(an ``AssertionError``) whose message says what is wrong; a right one prints a tick. Function
answers count as not done while they return ``...`` or ``None`` (the body of a stub).

A notebook's checkers are small functions ``checker(answer)`` that raise :class:`ExerciseError`;
notebooks 03–05 share :func:`check`. Reference solutions live in ``notebooks/solutions/`` and
``tests/test_exercises.py`` checks that the checkers accept them and reject typical mistakes.

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["ExerciseError", "NotDone", "check", "answered", "check_clipping", "check_poisson_sampler",
           "check_noise_multiplier"]


class ExerciseError(AssertionError):
    """The answer is wrong; the message says how."""


class NotDone(Exception):
    """The answer is still the ``...`` placeholder."""


def answered(value):
    """``value`` if it is an answer; raises :class:`NotDone` for the placeholders ``...`` and None."""
    if value is Ellipsis or value is None:
        raise NotDone
    return value


def check(title: str, answer, checker) -> bool:
    """Runs ``checker(answer)`` and prints the verdict.

    Args:
      title: the exercise, as the notebook names it.
      answer: the student's value or function (``...`` while not done).
      checker: raises :class:`ExerciseError` for a wrong answer, :class:`NotDone` for a stub.

    Returns:
      True if correct, False if not done yet.

    Raises:
      ExerciseError: the answer is wrong (the message says why).
    """
    try:
        checker(answered(answer))
    except NotDone:
        print(f"[ ] {title}: not done yet. Replace the `...` with your code and run the cell again "
              "(a solution is in notebooks/solutions/).")
        return False
    print(f"[x] {title}: correct.")
    return True


# ---------------------------------------------------------------------------------------------
# notebooks/03_dpsgd_mnist.ipynb
# ---------------------------------------------------------------------------------------------


def _fail(message: str):
    raise ExerciseError(message)


def check_clipping(clip) -> None:
    """``clip(tree, l2_clip_norm) -> tree`` must equal :func:`dpedu.clipping.clip_to_norm`.

    Tried on a two-leaf pytree whose global norm is above C, below C, and zero (no NaN allowed).
    """
    from dpedu.clipping import clip_to_norm

    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    norm = float(np.sqrt(sum(np.sum(leaf ** 2) for leaf in base.values())))
    cases = (("norm above C", base, norm / 3), ("norm below C", base, norm * 2),
             ("zero gradient", jax.tree_util.tree_map(np.zeros_like, base), 1.0))
    for name, tree, l2_clip_norm in cases:
        got = answered(clip(tree, l2_clip_norm))
        want, _ = clip_to_norm(tree, l2_clip_norm)
        if jax.tree_util.tree_structure(got) != jax.tree_util.tree_structure(want):
            _fail(f"{name}: return a pytree shaped like the gradient (got {jax.tree_util.tree_structure(got)})")
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            if np.shape(g) != np.shape(w) or not np.allclose(g, w, rtol=1e-5, atol=1e-7):
                _fail(f"{name} (C = {l2_clip_norm:.3g}): the result differs from g * min(1, C / ||g||), with ||g|| the norm of ALL leaves "
                      "together (and no division by zero)")


def check_poisson_sampler(sample) -> None:
    """``sample(rng, num_examples, sampling_rate) -> indices`` must be Poisson sampling.

    Checked over 2,000 seeded batches of N = 500 at q = 0.1: indices are distinct and in range;
    the batch size has the Binomial(N, q) mean and variance (a fixed-size sampler fails here);
    every example is picked with frequency q (a sampler favouring some examples fails). The
    tolerances are 6 standard errors, so a correct sampler essentially never fails.
    """
    num_examples, q, draws = 500, 0.1, 2000
    rng = np.random.default_rng(1234)
    counts = np.zeros(num_examples)
    sizes = np.empty(draws)
    for i in range(draws):
        idx = np.asarray(answered(sample(rng, num_examples, q)))
        if idx.ndim != 1 or (idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0
                                            or idx.max() >= num_examples)):
            _fail("return a 1-D array of integer indices in [0, num_examples)")
        if np.unique(idx).size != idx.size:
            _fail("an example appears twice in one batch: Poisson sampling includes each at most once")
        counts[idx] += 1
        sizes[i] = idx.size
    mean, var = num_examples * q, num_examples * q * (1 - q)
    if abs(sizes.mean() - mean) > 6 * np.sqrt(var / draws):
        _fail(f"mean batch size {sizes.mean():.2f}, expected q*N = {mean:g}")
    if abs(sizes.var() / var - 1) > 6 * np.sqrt(2 / draws):
        _fail(f"batch-size variance {sizes.var():.2f}, expected N*q*(1-q) = {var:g}: batch sizes must vary "
              "as Binomial(N, q) (a fixed-size batch is not Poisson sampling)")
    # 6 standard errors: the largest of 500 correct frequencies exceeds it with probability ~1e-6.
    worst = np.max(np.abs(counts / draws - q))
    if worst > 6 * np.sqrt(q * (1 - q) / draws):
        _fail(f"some example is picked with frequency {q + worst:.3f} or {q - worst:.3f}, expected {q}: each "
              "example must be kept independently with probability q")


def check_noise_multiplier(noise_multiplier, *, target_epsilon: float, sampling_rate: float, steps: int,
                           delta: float, slack: float = 0.05) -> None:
    """σ must meet ``target_epsilon`` (PLD accountant) and ``σ / (1 + slack)`` must not (no wasted noise)."""
    from dpedu.accounting import epsilon

    sigma = float(noise_multiplier)
    if not sigma > 0:
        _fail(f"the noise multiplier must be > 0, got {sigma!r}")
    eps = epsilon(sigma, sampling_rate, steps, delta, accountant="pld")
    if eps > target_epsilon:
        _fail(f"σ = {sigma:.4g} gives ε = {eps:.4g} > {target_epsilon:g}: not enough noise")
    smaller = sigma / (1 + slack)
    if epsilon(smaller, sampling_rate, steps, delta, accountant="pld") <= target_epsilon:
        _fail(f"σ = {sigma:.4g} meets ε ≤ {target_epsilon:g} (ε = {eps:.3g}), but so does σ = {smaller:.4g}: "
              "you add more noise than needed (and lose accuracy)")


# ---------------------------------------------------------------------------------------------
# notebooks/05_reconstruction_attack.ipynb
# ---------------------------------------------------------------------------------------------

__all__ += ["check_gradient_inversion", "check_success_bound", "check_gaussian_success_bound"]


def check_gradient_inversion(invert) -> None:
    """``invert(weight_grad, bias_grad) -> (image, label)`` must recover one example from its
    softmax-regression gradient (:func:`dpedu.attacks.softmax_regression_loss`).

    Tried on 20 random (parameters, image, label) triples with 4 classes and 6 pixels.
    """
    from dpedu.attacks import softmax_regression_loss

    rng = np.random.default_rng(5)
    grad_fn = jax.jit(jax.grad(softmax_regression_loss))
    for trial in range(20):
        params = {"weights": rng.normal(size=(4, 6)).astype(np.float32), "bias": rng.normal(size=4).astype(np.float32)}
        image, label = rng.random(6).astype(np.float32), int(rng.integers(4))
        grads = grad_fn(params, image, label)
        got = answered(invert(np.asarray(grads["weights"]), np.asarray(grads["bias"])))
        if not isinstance(got, tuple) or len(got) != 2:
            _fail("return a pair (image, label)")
        got_image, got_label = np.ravel(np.asarray(got[0], dtype=np.float64)), got[1]
        if int(got_label) != label:
            _fail(f"trial {trial}: label {got_label}, expected {label}. Which entry of p − e_y is negative?")
        if got_image.shape != image.shape or not np.allclose(got_image, image, atol=1e-4):
            _fail(f"trial {trial}: the image differs. Row c of the weight gradient is (p_c − [c = y]) · x; "
                  "divide it by entry c of the bias gradient")


def check_success_bound(bound) -> None:
    """``bound(epsilon, delta, prior_size)`` must be ``min(1, e^ε/m + δ)`` (:func:`dpedu.attacks.dp_success_bound`)."""
    from dpedu.attacks import dp_success_bound

    for eps, delta, m in ((1.0, 1e-5, 10), (0.1, 1e-6, 100), (2.0, 1e-5, 1000), (5.0, 1e-5, 10)):
        got = float(answered(bound(eps, delta, m)))
        want = dp_success_bound(eps, delta, m)
        if not np.isclose(got, want, rtol=1e-9, atol=1e-12):
            hint = " (a probability: cap it at 1)" if want == 1.0 else ""
            _fail(f"ε = {eps:g}, δ = {delta:g}, m = {m}: got {got:.6g}, expected {want:.6g}{hint}")


def check_gaussian_success_bound(bound) -> None:
    """``bound(noise_multiplier, steps, prior_size)`` must be ``Φ(√T/σ − Φ⁻¹(1 − 1/m))``
    (:func:`dpedu.attacks.gaussian_success_bound`)."""
    from dpedu.attacks import gaussian_success_bound

    for sigma, steps, m in ((3.0, 40, 10), (20.0, 100, 10), (1.0, 1, 100), (0.5, 9, 2)):
        got = float(answered(bound(sigma, steps, m)))
        want = gaussian_success_bound(sigma, steps, m)
        if not np.isclose(got, want, rtol=1e-6, atol=1e-9):
            _fail(f"σ = {sigma:g}, T = {steps}, m = {m}: got {got:.6g}, expected {want:.6g}. T Gaussian steps "
                  "of noise multiplier σ compose to μ = √T/σ, and the bound is 1 − G_μ(1/m)")
