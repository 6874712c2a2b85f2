"""dpedu.averaging: EMA with De et al.'s (jax_privacy) warm-up."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dpedu.averaging import ema_init, ema_update


def test_ema_matches_closed_form_recursion_with_warmup():
    rng = np.random.default_rng(0)
    iterates = rng.normal(size=(30, 5)).astype(np.float32)
    average = ema_init({"w": iterates[0]})
    expected = iterates[0].astype(np.float64)
    update = jax.jit(ema_update, static_argnames="warmup")
    for t in range(1, 30):
        average = update(average, {"w": iterates[t]}, t - 1, 0.9)
        mu = min(0.9, t / (9.0 + t))  # (1 + step) / (10 + step) with step = t - 1
        expected = mu * expected + (1 - mu) * iterates[t]
    np.testing.assert_allclose(average["w"], expected, rtol=1e-5)


def test_first_update_uses_decay_point_one_and_no_warmup_uses_decay():
    avg, new = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
    np.testing.assert_allclose(ema_update(avg, new, 0, 0.9999)["w"], [0.9, 0.9], rtol=1e-6)
    np.testing.assert_allclose(ema_update(avg, new, 0, 0.9999, warmup=False)["w"], [1e-4, 1e-4], rtol=1e-3)
    np.testing.assert_allclose(ema_update(avg, new, 10**7, 0.9999)["w"], [1e-4, 1e-4], rtol=1e-2)
    np.testing.assert_array_equal(ema_update(avg, new, 5, 0.0)["w"], [1.0, 1.0])


def test_init_copies_and_constant_iterates_stay_constant():
    params = {"w": jnp.arange(3.0), "b": jnp.ones(())}
    average = ema_init(params)
    assert average["w"] is not params["w"]
    for t in range(5):
        average = ema_update(average, params, t)
    np.testing.assert_allclose(average["w"], params["w"], rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [(dict(decay=1.0), "decay"), (dict(decay=-0.1), "decay"),
                                           (dict(step=-1), "step")])
def test_bad_arguments(kwargs, match):
    args = dict(step=0, decay=0.9) | kwargs
    with pytest.raises(ValueError, match=match):
        ema_update({"w": jnp.zeros(1)}, {"w": jnp.zeros(1)}, **args)
