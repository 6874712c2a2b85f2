"""Notebook 02's exercise checkers: the reference solutions pass, typical mistakes fail with a
message naming the mistake, and the placeholder is "not done"."""

from __future__ import annotations

import math

import dp_accounting
import pytest

from dpedu import accounting, exercises, mechanisms
from dpedu.exercises import nb02


@pytest.fixture(scope="module")
def solutions():
    return exercises.load_solutions("02")


def test_placeholders_are_not_done(capsys):
    for checker in (nb02.check_rdp_epsilon, nb02.check_delta_split, nb02.check_replace_one_epsilon):
        assert exercises.check("Exercise", ..., checker) is False
    assert capsys.readouterr().out.count("not done yet") == 3


def test_rdp_by_hand(solutions):
    assert exercises.check("Exercise 1", solutions.rdp_epsilon, nb02.check_rdp_epsilon)
    # The improved conversion over a continuum of orders agrees with dp-accounting's RdpAccountant
    # (its orders are a grid, so it can only be a little larger).
    reference = dp_accounting.rdp.RdpAccountant()
    reference.compose(dp_accounting.GaussianDpEvent(10.0), 100)
    assert nb02.rdp_epsilon() <= reference.get_epsilon(1e-5) <= nb02.rdp_epsilon() * 1.001
    with pytest.raises(exercises.ExerciseError, match="classic conversion"):
        nb02.check_rdp_epsilon(nb02.rdp_epsilon("classic"))
    with pytest.raises(exercises.ExerciseError, match="ONE step"):
        nb02.check_rdp_epsilon(nb02.rdp_epsilon(steps=1))
    with pytest.raises(exercises.ExerciseError, match="dropped the 2"):
        nb02.check_rdp_epsilon(nb02.rdp_epsilon(factor=1.0))
    with pytest.raises(exercises.ExerciseError, match="EXACT"):
        nb02.check_rdp_epsilon(mechanisms.analytic_epsilon(1.0, 1e-5))
    with pytest.raises(exercises.ExerciseError, match="not the best"):
        nb02.check_rdp_epsilon(nb02.rdp_epsilon() * 1.05)


def test_delta_split(solutions):
    assert exercises.check("Exercise 2", solutions.delta_split, nb02.check_delta_split)
    with pytest.raises(exercises.ExerciseError, match="Tδ₀ \\+ δ'"):  # per-step δ₀ counted once, not T times
        nb02.check_delta_split((5e-6, 5e-6))
    with pytest.raises(exercises.ExerciseError, match="equal split"):
        nb02.check_delta_split((0.5e-5 / 100, 0.5e-5))
    with pytest.raises(exercises.ExerciseError, match="per-step δ₀'s"):  # almost all of δ on δ'
        nb02.check_delta_split((0.05e-5 / 100, 0.95e-5))
    with pytest.raises(exercises.ExerciseError, match="pair"):
        nb02.check_delta_split(1e-5)


def test_replace_one_shuffle(solutions):
    assert exercises.check("Exercise 3", solutions.replace_one_epsilon, nb02.check_replace_one_epsilon)
    # The same number from dp-accounting's PLD accountant: 10 Gaussians with noise multiplier σ/2.
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(2.0), 10)
    assert math.isclose(accounting.epsilon_for_event(event, 1e-5, "pld"), solutions.replace_one_epsilon, rel_tol=1e-3)
    with pytest.raises(exercises.ExerciseError, match="add/remove"):
        nb02.check_replace_one_epsilon(mechanisms.analytic_epsilon(4.0 / math.sqrt(10), 1e-5))
    with pytest.raises(exercises.ExerciseError, match="μ√E"):
        nb02.check_replace_one_epsilon(mechanisms.analytic_epsilon(4.0 / 20, 1e-5))
    with pytest.raises(exercises.ExerciseError, match="naive composition"):
        nb02.check_replace_one_epsilon(10 * mechanisms.analytic_epsilon(2.0, 1e-6))


def test_solutions_print_from_the_package(capsys):
    exercises.show_solution("02", "replace_one_epsilon")
    assert "replace_one_epsilon = analytic_epsilon" in capsys.readouterr().out
