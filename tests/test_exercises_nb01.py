"""Notebook 01's exercise checkers: the reference solutions pass, typical mistakes fail with a
message naming the mistake, and the placeholder is "not done"."""

from __future__ import annotations

import math

import pytest

from dpedu import exercises, mechanisms
from dpedu.exercises import nb01


@pytest.fixture(scope="module")
def solutions():
    return exercises.load_solutions("01")


def test_placeholders_are_not_done(capsys):
    for checker in (nb01.check_classic_failure, nb01.check_family_noise, nb01.check_laplace_crossover):
        assert exercises.check("Exercise", ..., checker) is False
    assert capsys.readouterr().out.count("not done yet") == 3


def test_classic_failure(solutions):
    assert exercises.check("Exercise 1", solutions.classic_failure, nb01.check_classic_failure)
    assert 8.7 < nb01.classic_failure_epsilon(1e-6) < 8.9
    with pytest.raises(exercises.ExerciseError, match="δ = 1e-5"):  # the cell above's answer
        nb01.check_classic_failure(nb01.classic_failure_epsilon(1e-5))
    with pytest.raises(exercises.ExerciseError, match="PROOF stops"):  # the theorem's limit
        nb01.check_classic_failure(1.0)
    with pytest.raises(exercises.ExerciseError, match="still DP"):
        nb01.check_classic_failure(5.0)
    with pytest.raises(exercises.ExerciseError, match="FIRST ε"):
        nb01.check_classic_failure(12.0)


def test_family_noise(solutions):
    assert exercises.check("Exercise 2", solutions.family_noise, nb01.check_family_noise)
    one = mechanisms.analytic_noise_multiplier(1.0, 1e-5)
    with pytest.raises(exercises.ExerciseError, match="protects ONE person"):
        nb01.check_family_noise(one)
    with pytest.raises(exercises.ExerciseError, match="√4"):
        nb01.check_family_noise(2 * one)
    generic = mechanisms.analytic_noise_multiplier(0.25, 1e-5 / (4 * math.exp(0.75)))
    with pytest.raises(exercises.ExerciseError, match="generic group-privacy"):
        nb01.check_family_noise(generic)
    with pytest.raises(exercises.ExerciseError, match="not enough noise"):
        nb01.check_family_noise(10.0)
    with pytest.raises(exercises.ExerciseError, match="must be a number"):
        nb01.check_family_noise("fifteen")


def test_laplace_crossover(solutions):
    assert exercises.check("Exercise 3", solutions.laplace_crossover, nb01.check_laplace_crossover)
    sigma = mechanisms.analytic_noise_multiplier(0.5, 1e-5)
    with pytest.raises(exercises.ExerciseError, match="SCALE b"):  # std of Laplace is √2·b
        nb01.check_laplace_crossover(math.floor((sigma * 0.5) ** 2) + 1)
    with pytest.raises(exercises.ExerciseError, match="classic"):
        classic = mechanisms.classic_noise_multiplier(0.5, 1e-5)
        nb01.check_laplace_crossover(math.floor((classic * 0.5) ** 2 / 2) + 1)
    with pytest.raises(exercises.ExerciseError, match="L1 sensitivity as d·C"):
        nb01.check_laplace_crossover(math.floor(sigma * 0.5 / math.sqrt(2)) + 1)
    with pytest.raises(exercises.ExerciseError, match="still smaller"):
        nb01.check_laplace_crossover(solutions.laplace_crossover - 1)
    with pytest.raises(exercises.ExerciseError, match="whole number"):
        nb01.check_laplace_crossover(6.5)


def test_solutions_print_from_the_package(capsys):
    exercises.show_solution("01", "family_noise")
    assert "family_noise = 4 * analytic_noise_multiplier" in capsys.readouterr().out
