"""The exercise checkers: a stub is "not done", the reference solutions pass, typical mistakes fail."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpedu import exercises

# The setting of the notebook's exercise 3.
SIGMA_EXERCISE = dict(target_epsilon=1.0, sampling_rate=256 / 60_000, steps=3516, delta=1e-5)


@pytest.fixture(scope="module")
def solutions():
    return exercises.load_solutions("03")


def test_placeholder_is_not_done_and_does_not_raise(capsys):
    assert exercises.check("Exercise 1", ..., exercises.check_clipping) is False
    assert "not done yet" in capsys.readouterr().out


def test_stub_function_returning_nothing_is_not_done(capsys):
    def clip_gradient(grad, l2_clip_norm):
        ...

    def sample(rng, num_examples, sampling_rate):
        return ...

    assert exercises.check("Exercise 1", clip_gradient, exercises.check_clipping) is False
    assert exercises.check("Exercise 2", sample, exercises.check_poisson_sampler) is False
    assert capsys.readouterr().out.count("not done yet") == 2


def test_clipping_solution_passes_and_mistakes_fail(solutions, capsys):
    assert exercises.check("Exercise 1", solutions.clip_gradient, exercises.check_clipping) is True
    assert "correct" in capsys.readouterr().out

    def per_leaf(grad, c):  # clips each layer separately: not the global norm
        return jax.tree_util.tree_map(lambda g: g * jnp.minimum(1.0, c / jnp.linalg.norm(g)), grad)

    def always_scale(grad, c):  # scales up small gradients too
        norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(grad)))
        return jax.tree_util.tree_map(lambda g: g * c / norm, grad)

    with pytest.raises(exercises.ExerciseError, match="norm above C"):
        exercises.check("Exercise 1", per_leaf, exercises.check_clipping)
    with pytest.raises(exercises.ExerciseError, match="norm below C"):
        exercises.check("Exercise 1", always_scale, exercises.check_clipping)


def test_poisson_solution_passes_and_fixed_size_or_biased_samplers_fail(solutions):
    assert exercises.check("Exercise 2", solutions.poisson_sample, exercises.check_poisson_sampler)

    def fixed_size(rng, n, q):  # shuffled fixed-size batch: the classic shortcut
        return rng.permutation(n)[: round(q * n)]

    def biased(rng, n, q):  # right batch sizes, but the first examples are picked twice as often
        p = np.where(np.arange(n) < n // 10, 2 * q, q * (1 - 0.2) / 0.9)
        return np.flatnonzero(rng.random(n) < p)

    def with_repeats(rng, n, q):  # sampling with replacement
        return rng.integers(0, n, size=rng.binomial(n, q))

    with pytest.raises(exercises.ExerciseError, match="variance"):
        exercises.check_poisson_sampler(fixed_size)
    with pytest.raises(exercises.ExerciseError, match="frequency"):
        exercises.check_poisson_sampler(biased)
    with pytest.raises(exercises.ExerciseError, match="twice"):
        exercises.check_poisson_sampler(with_repeats)


def test_noise_multiplier_solution_passes_and_too_little_or_too_much_noise_fails(solutions):
    checker = functools.partial(exercises.check_noise_multiplier, **SIGMA_EXERCISE)
    sigma = solutions.noise_multiplier_for(**SIGMA_EXERCISE)
    # The reference value 1.188 comes from dpedu.accounting.calibrate_noise_multiplier (PLD, to 1 %).
    assert 1.17 < sigma < 1.21
    assert exercises.check("Exercise 3", sigma, checker)
    with pytest.raises(exercises.ExerciseError, match="not enough noise"):
        checker(0.9 * sigma)
    with pytest.raises(exercises.ExerciseError, match="more noise than needed"):
        checker(1.2 * sigma)
    with pytest.raises(exercises.ExerciseError, match="> 0"):
        checker(0.0)


def test_solutions_ship_with_the_package_and_print(capsys):
    # Colab installs only the package: the solutions must be reachable from it.
    exercises.show_solution("03", "clip_gradient")
    assert "def clip_gradient" in capsys.readouterr().out
    exercises.show_solution("02", "replace_one_epsilon")
    assert "replace_one_epsilon =" in capsys.readouterr().out
    with pytest.raises(ValueError, match="define no 'nope'.*clip_gradient"):
        exercises.show_solution("03", "nope")
    with pytest.raises(ValueError, match="no solutions for notebook '99'.*03"):
        exercises.show_solution("99", "x")


# Each notebook's exercise cells, in order, by the checkers they call (issue 13: at least three).
EXERCISE_CHECKERS = {
    "01_gaussian_mechanism.ipynb": ("check_classic_failure", "check_family_noise", "check_laplace_crossover"),
    "02_composition_accounting.ipynb": ("check_rdp_epsilon", "check_delta_split", "check_replace_one_epsilon"),
    "03_dpsgd_mnist.ipynb": ("check_clipping", "check_mixing_test", "check_poisson_sampler",
                             "check_replace_one_epsilon"),
    "04_cifar10_ladder.ipynb": ("check_mixes_examples", "check_batch_size_factors", "check_average_then_clip"),
    "05_reconstruction_attack.ipynb": ("check_noise_for_target", "check_epsilon_lower_bound",
                                       "check_prior_aware_statements"),
    "06_auditing.ipynb": ("check_tpr_at_fpr", "check_trials_needed", "check_audit_statements",
                          "check_one_run_ceiling"),
}


@pytest.mark.parametrize("name", sorted(EXERCISE_CHECKERS))
def test_notebook_has_at_least_three_unsolved_exercises_with_these_checkers(name):
    import nbformat

    from dpedu import course

    assert set(EXERCISE_CHECKERS) == {notebook for notebook, _ in course.NOTEBOOKS}
    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / name, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "exercises.check(" in c.source]
    names = EXERCISE_CHECKERS[name]
    assert len(cells) >= 3
    assert [next(n for n in names if n in c) for c in cells] == list(names)
    assert all(re.search(r"\.\.\.\)?  # ", c) for c in cells)  # committed unsolved
