"""Notebook 04's exercise checkers accept the reference solutions and name typical mistakes."""

import numpy as np
import pytest

from dpedu import exercises
from dpedu.exercises import nb04


@pytest.fixture(scope="module")
def solutions():
    return exercises.load_solutions("04")


def _clip_rows(x, c):
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x * np.minimum(1.0, c / np.maximum(norms, 1e-30))


def test_solutions_pass_and_stubs_are_not_done(solutions, capsys):
    assert exercises.check("1", solutions.average_then_clip, nb04.check_average_then_clip)
    assert exercises.check("2", solutions.mixes_examples, nb04.check_mixes_examples)
    assert exercises.check("3", solutions.batch_size_factors(), nb04.check_batch_size_factors)
    assert not exercises.check("1", ..., nb04.check_average_then_clip)
    assert not exercises.check("3", (..., ...), nb04.check_batch_size_factors)
    assert "not done yet" in capsys.readouterr().out


def test_solution_matches_the_library_augmult_clipping(solutions):
    import jax.numpy as jnp

    from dpedu import clipping

    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
    copies = jnp.asarray(rng.normal(size=(5, 6, 4)), jnp.float32)  # 5 examples, K = 6 copies
    labels = jnp.zeros(5)

    def loss(p, x, y):
        return jnp.sum(jnp.tanh(x @ p["w"]) ** 2) + 0 * y

    got, _ = clipping.clipped_grad(loss, 0.5, augmult=True)(params, copies, labels, np.ones(5, bool))
    import jax

    per_copy = jax.vmap(jax.vmap(jax.grad(loss), in_axes=(None, 0, None)), in_axes=(None, 0, 0))(params, copies, labels)
    mine = solutions.average_then_clip(np.asarray(per_copy["w"]).reshape(5, 6, -1), 0.5)
    np.testing.assert_allclose(np.asarray(got["w"]).reshape(5, -1), mine, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("wrong, message", [
    (lambda g, c: _clip_rows(g, c).sum(axis=1), "K·C"),
    (lambda g, c: _clip_rows(g, c).mean(axis=1), "clipped each copy, then averaged"),
    (lambda g, c: g.mean(axis=1), "no clipping"),
    (lambda g, c: _clip_rows(g.sum(axis=1), c), "SUM of the copies"),
    (lambda g, c: _clip_rows(g, c), "ONE vector per example"),
])
def test_average_then_clip_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseError, match=message):
        exercises.check("1", wrong, nb04.check_average_then_clip)


def _changes_example_zero(layer, batch):  # perturbs example 0 itself
    other = np.array(batch, copy=True)
    other[0] = 3.0 + 5.0 * other[0]
    return bool(np.max(np.abs(layer(batch)[0] - layer(other)[0])) > 1e-6)


def _compares_whole_batch(layer, batch):
    other = np.array(batch, copy=True)
    other[1:] = 3.0 + 5.0 * other[1:]
    return bool(np.max(np.abs(layer(batch) - layer(other))) > 1e-6)


def _changes_one_other(layer, batch):
    other = np.array(batch, copy=True)
    other[1] = 3.0 + 5.0 * other[1]
    return bool(np.max(np.abs(layer(batch)[0] - layer(other)[0])) > 1e-6)


def _copies_the_batch(layer, batch):  # "changes" nothing
    return bool(np.max(np.abs(layer(batch)[0] - layer(np.array(batch, copy=True))[0])) > 1e-6)


@pytest.mark.parametrize("wrong, message", [
    (_changes_example_zero, "is per-example, but your test says it mixes"),
    (_compares_whole_batch, "comparing the whole batch"),
    (_changes_one_other, "LAST example only"),
    (_copies_the_batch, "Replace the other examples by different values"),
    (lambda layer, batch: 1, "return True or False"),
])
def test_mixes_examples_names_the_mistake(wrong, message):
    with pytest.raises(exercises.ExerciseError, match=message):
        exercises.check("2", wrong, nb04.check_mixes_examples)


def test_batch_size_factors_names_the_mistake(solutions):
    epochs, steps = solutions.batch_size_factors()
    assert epochs > 4 and 1.5 < steps < epochs  # fixed epochs gains most
    cases = [((steps, epochs), "swapped"), ((1 / epochs, 1 / steps), "the inverse"),
             ((8.0, 8.0), "you kept σ fixed"), ((np.sqrt(8), steps), "rule of thumb"),
             ((epochs, 1.0), "fixed steps: got 1")]
    for answer, message in cases:
        with pytest.raises(exercises.ExerciseError, match=message):
            exercises.check("3", answer, nb04.check_batch_size_factors)
