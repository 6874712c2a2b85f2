"""Notebook 03's new exercise checkers: each accepts the reference solution and rejects typical
mistakes with a message that names the mistake."""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

from dpedu import accounting, exercises
from dpedu.exercises import nb03

SIGMA_EXERCISE = dict(target_epsilon=1.0, sampling_rate=256 / 60_000, steps=3516, delta=1e-5)


@pytest.fixture(scope="module")
def solutions():
    return exercises.load_solutions("03")


def test_checkers_stay_importable_from_dpedu_exercises():
    assert exercises.check_clipping is nb03.check_clipping
    assert exercises.check_poisson_sampler is nb03.check_poisson_sampler
    assert exercises.check_noise_multiplier is nb03.check_noise_multiplier


# --- σ calibration: a σ right for another accountant is named as such -------------------------------


def test_noise_multiplier_checker_names_the_rdp_and_moments_accountants(solutions):
    checker = functools.partial(exercises.check_noise_multiplier, **SIGMA_EXERCISE)
    sigma_pld = solutions.noise_multiplier_for(**SIGMA_EXERCISE)
    checker(sigma_pld)
    sigma_rdp = accounting.calibrate_noise_multiplier(1.0, SIGMA_EXERCISE["sampling_rate"], 3516, 1e-5, "rdp")
    with pytest.raises(exercises.ExerciseError, match="RDP-calibrated σ.*asks for PLD"):
        checker(sigma_rdp)
    sigma_moments = accounting.calibrate_noise_multiplier(1.0, SIGMA_EXERCISE["sampling_rate"], 3516, 1e-5, "moments")
    with pytest.raises(exercises.ExerciseError, match="moments-accountant"):
        checker(sigma_moments)
    with pytest.raises(exercises.ExerciseError, match="not enough noise"):
        checker(0.9 * sigma_pld)
    # Asked for RDP, the PLD answer is too little noise, and the message says it is PLD's.
    with pytest.raises(exercises.ExerciseError, match="PLD-calibrated σ.*asks for RDP"):
        exercises.check_noise_multiplier(sigma_pld, **SIGMA_EXERCISE, accountant="rdp")
    exercises.check_noise_multiplier(sigma_rdp, **SIGMA_EXERCISE, accountant="rdp")


# --- Exercise 3: the mixing test, and the layer that mixes ------------------------------------------


def test_mixing_test_accepts_the_solution_and_names_two_mistakes(solutions):
    assert exercises.check("Exercise 3a", solutions.gradient_moves, nb03.check_mixing_test)

    def whole_batch_gradient(apply_fn, params, images, labels):  # the batch's total loss: always moves
        def total(params, images):
            logits = apply_fn(params, images)
            return -jax.nn.log_softmax(logits)[np.arange(len(labels)), labels].sum()
        g1 = jax.grad(total)(params, images)
        g2 = jax.grad(total)(params, np.concatenate([images[:1], -images[1:]]))
        return not all(np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)))

    def batch_of_one(apply_fn, params, images, labels):  # example 0 alone: batch norm never sees the others
        def loss0(params, images):
            return -jax.nn.log_softmax(apply_fn(params, images[:1])[0])[labels[0]]
        g1 = jax.grad(loss0)(params, images)
        g2 = jax.grad(loss0)(params, np.concatenate([images[:1], -images[1:]]))
        return not all(np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)))

    def exact_equality(apply_fn, params, images, labels):  # no tolerance: rounding is not mixing
        return solutions.gradient_moves(apply_fn, params, images, labels) or True

    with pytest.raises(exercises.ExerciseError, match="whole batch's loss"):
        nb03.check_mixing_test(whole_batch_gradient)
    with pytest.raises(exercises.ExerciseError, match="batch of one"):
        nb03.check_mixing_test(batch_of_one)
    with pytest.raises(exercises.ExerciseError, match="every model mixes"):
        nb03.check_mixing_test(exact_equality)


def test_mixing_layers_checker(solutions):
    candidates = nb03.candidate_layers()
    answer = solutions.mixing_layers_of(candidates)
    assert answer == ["batch norm"]
    assert exercises.check("Exercise 3b", answer, nb03.check_mixing_layers)
    with pytest.raises(exercises.ExerciseError, match="'layer norm' does not mix.*its OWN features"):
        nb03.check_mixing_layers(["batch norm", "layer norm"])
    with pytest.raises(exercises.ExerciseError, match="'group norm' does not mix"):
        nb03.check_mixing_layers(["group norm"])
    with pytest.raises(exercises.ExerciseError, match="left it out.*ACROSS the batch"):
        nb03.check_mixing_layers([])
    with pytest.raises(exercises.ExerciseError, match="unknown candidate"):
        nb03.check_mixing_layers(["attention"])


# --- Exercise 4: shuffled batches under replace-one ---------------------------------------------------


def test_replace_one_epsilon_accepts_the_solution_and_names_the_mistakes(solutions):
    setting = nb03.REPLACE_ONE_SETTING
    checker = functools.partial(nb03.check_replace_one_epsilon, **setting)
    sigma, epochs, delta = setting["noise_multiplier"], setting["epochs"], setting["delta"]
    answer = solutions.replace_one_epsilon(sigma, epochs, delta)
    assert exercises.check("Exercise 4", answer, checker)
    # PLD of the composed event is accepted too (it agrees with the exact Gaussian).
    import dp_accounting

    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma / 2), epochs)
    checker(accounting.epsilon_for_event(event, delta, "pld"))

    zero_out = accounting.epsilon_for_event(
        accounting.dp_event(sigma, setting["sampling_rate"], setting["steps"], "shuffle", num_examples=60_000), delta)
    with pytest.raises(exercises.ExerciseError, match="zero-out relation.*2C"):
        checker(zero_out)
    with pytest.raises(exercises.ExerciseError, match="Poisson-sampling ε"):
        checker(accounting.epsilon(sigma, setting["sampling_rate"], setting["steps"], delta))
    with pytest.raises(exercises.ExerciseError, match="right sensitivity.*Poisson"):
        checker(accounting.epsilon(sigma / 2, setting["sampling_rate"], setting["steps"], delta))
    with pytest.raises(exercises.ExerciseError, match="ONE epoch"):
        checker(solutions.replace_one_epsilon(sigma, 1, delta))
    with pytest.raises(exercises.ExerciseError, match="RDP's bound"):
        checker(accounting.epsilon_for_event(event, delta, "rdp"))
    with pytest.raises(exercises.ExerciseError, match="not the ε of 15 composed"):
        checker(1.0)
    assert math.isclose(answer, 62.24, rel_tol=0.01)  # the exercise's number (exact Gaussian, μ = 2√15)
