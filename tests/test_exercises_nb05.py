"""Notebook 05's exercise checkers accept the reference solutions and name typical mistakes."""

import math

import pytest
from scipy import stats

from dpedu import exercises, mechanisms
from dpedu.exercises import nb05


@pytest.fixture(scope="module")
def solutions():
    return exercises.load_solutions("05")


def test_solutions_pass_and_stubs_are_not_done(solutions, capsys):
    assert exercises.check("1", solutions.noise_for_target(), nb05.check_noise_for_target)
    assert exercises.check("2", solutions.epsilon_lower_bound, nb05.check_epsilon_lower_bound)
    assert exercises.check("3", solutions.prior_aware_statements, nb05.check_prior_aware_statements)
    assert exercises.check("3", "b, c", nb05.check_prior_aware_statements)
    assert not exercises.check("1", (..., ...), nb05.check_noise_for_target)
    assert not exercises.check("2", ..., nb05.check_epsilon_lower_bound)
    assert "not done yet" in capsys.readouterr().out


def test_checkers_are_reexported_from_dpedu_exercises():
    assert exercises.check_noise_for_target is nb05.check_noise_for_target


def test_noise_for_target_meets_the_target_tightly(solutions):
    from dpedu import attacks

    sigma, eps = solutions.noise_for_target()
    assert attacks.gaussian_success_bound(sigma, 40, 10) == pytest.approx(0.2, abs=1e-9)
    # The (ε, δ) bound at that ε says nothing useful: the Gaussian bound is what protects.
    assert attacks.dp_success_bound(eps, 1e-5, 10) > 0.5


def test_noise_for_target_names_the_mistake(solutions):
    sigma, eps = solutions.noise_for_target()
    mu = math.sqrt(40) / sigma
    eps_delta_sigma = math.sqrt(40) * mechanisms.analytic_noise_multiplier(math.log(10 * (0.2 - 1e-5)), 1e-5)
    cases = [((sigma / math.sqrt(40), eps), "is σ/√T"), ((40 / mu, eps), "not T/σ"),
             ((eps_delta_sigma, eps), "the \\(ε, δ\\) bound"), ((sigma / 2, eps), "too little noise"),
             ((sigma * 1.5, eps), "a smaller σ does too"),
             ((sigma, mechanisms.analytic_epsilon(sigma, 1e-5)), "ONE step"),
             ((sigma, 40 * mechanisms.analytic_epsilon(sigma, 1e-5)), "naive composition"),
             ((sigma, math.log(10 * (0.2 - 1e-5))), "would allow"), ((sigma,), "pair")]
    for answer, message in cases:
        with pytest.raises(exercises.ExerciseError, match=message):
            exercises.check("1", answer, nb05.check_noise_for_target)


def _ci_low(k, n):
    return stats.beta.ppf(0.025, k, n - k + 1)


@pytest.mark.parametrize("wrong, message", [
    (lambda k, n, m, d: max(0.0, math.log(m * (k / n - d))), "observed rate"),
    (lambda k, n, m, d: max(0.0, math.log(m * (stats.beta.ppf(0.05, k, n - k + 1) - d))), "one-sided"),
    (lambda k, n, m, d: math.log(m * (_ci_low(k, n) - d)), "< 0"),
    (lambda k, n, m, d: max(0.0, math.log(m * _ci_low(k, n))), "forgot δ"),
    (lambda k, n, m, d: max(0.0, math.log10(m * (_ci_low(k, n) - d))), "log10"),
])
def test_epsilon_lower_bound_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseError, match=message):
        exercises.check("2", wrong, nb05.check_epsilon_lower_bound)


@pytest.mark.parametrize("answer, message", [
    ({"A", "B", "C"}, "A is false"), ({"B"}, "C is true"), ({"B", "C", "D"}, "D is false"),
    ("BCE", "E is false"), ({"F"}, "unknown statement"),
])
def test_prior_aware_statements_name_the_mistake(answer, message):
    with pytest.raises(exercises.ExerciseError, match=message):
        exercises.check("3", answer, nb05.check_prior_aware_statements)
