"""dpedu.dpsgd: clipped sums, noise once per batch, / expected batch size, jitted steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from dpedu.dpsgd import clipped_grad_sum, make_dp_step, make_nonprivate_step, private_gradient
from dpedu.noise import add_gaussian_noise
from dpedu.sampling import pad_to_microbatches, poisson_batch_indices

RNG = np.random.default_rng(0)
PARAMS = {
    "w1": RNG.normal(size=(4, 6)).astype(np.float32),
    "b1": RNG.normal(size=6).astype(np.float32),
    "w2": RNG.normal(size=(6, 3)).astype(np.float32),
}
INPUTS = RNG.normal(size=(40, 4)).astype(np.float32)
LABELS = RNG.integers(0, 3, size=40).astype(np.int32)


def loss_fn(params, x, y):
    """A one-example MLP loss."""
    logits = jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


_one_grad = jax.jit(jax.grad(loss_fn))
_noise = jax.jit(add_gaussian_noise)
# One DP step shared by the tests below (compiling a step takes a second or two on CPU).
SIGMA, C, EXPECTED = 0.8, 0.5, 10.0
STEP = make_dp_step(loss_fn, optax.sgd(1.0), l2_clip_norm=C, noise_multiplier=SIGMA, expected_batch_size=EXPECTED)
OPT_STATE = optax.sgd(1.0).init(PARAMS)


def _naive_clipped(indices, c):
    """Per-example clipped gradients, one example at a time, in NumPy."""
    out = []
    for i in indices:
        grad = {k: np.asarray(v, np.float64) for k, v in _one_grad(PARAMS, INPUTS[i], LABELS[i]).items()}
        norm = np.sqrt(sum(np.sum(v ** 2) for v in grad.values()))
        out.append(({k: v * min(1.0, c / norm) for k, v in grad.items()}, norm))
    return out


def _batch(indices, microbatch_size):
    idx, mask = pad_to_microbatches(np.asarray(indices, dtype=np.int64), microbatch_size)
    return INPUTS[idx], LABELS[idx], mask


def _sgd_delta(new_params):
    # With optax.sgd(1.0) the update is exactly minus the gradient.
    return {k: np.asarray(PARAMS[k], np.float64) - np.asarray(new_params[k], np.float64) for k in PARAMS}


def test_clipped_grad_sum_equals_loop_and_stats_count_real_examples_only():
    indices = np.arange(8)
    naive = _naive_clipped(indices, c=1.0)
    c = float(np.median([n for _, n in naive]))
    naive = _naive_clipped(indices[:6], c)
    mask = np.arange(8) < 6  # two padded slots
    fn = jax.jit(clipped_grad_sum, static_argnums=0)
    grad_sum, sums = fn(loss_fn, PARAMS, INPUTS[:8], LABELS[:8], mask, c)
    for k in PARAMS:
        np.testing.assert_allclose(grad_sum[k], sum(g[k] for g, _ in naive), rtol=1e-5, atol=1e-6)
    assert int(sums["batch_size"]) == 6
    assert int(sums["clipped_count"]) == sum(n > c for _, n in naive)
    np.testing.assert_allclose(float(sums["grad_norm_sum"]), sum(n for _, n in naive), rtol=1e-5)


def test_private_gradient_adds_noise_once_and_divides_by_expected_batch_size():
    grad_sum = {"a": np.zeros(150_000, np.float32), "b": np.ones((10, 10), np.float32)}
    key = jax.random.key(7)
    sigma, c, expected = 1.3, 0.5, 40.0
    got = jax.jit(private_gradient)(key, grad_sum, noise_multiplier=sigma, l2_clip_norm=c, expected_batch_size=expected)
    manual = _noise(key, grad_sum, sigma * c)
    for k in grad_sum:
        np.testing.assert_allclose(got[k], np.asarray(manual[k]) / expected, rtol=1e-6)
    # After normalisation the noise is N(0, (σC / qN)²) per coordinate.
    z = np.asarray(got["a"], np.float64) / (sigma * c / expected)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    chi2 = (z.size - 1) * np.var(z, ddof=1)
    assert stats.chi2.ppf(5e-4, z.size - 1) < chi2 < stats.chi2.ppf(1 - 5e-4, z.size - 1)


def test_dp_step_divides_by_expected_not_realised_batch_size():
    key = jax.random.key(3)
    new_params, _, step_stats = STEP(PARAMS, OPT_STATE, key, *_batch([2, 5, 11], 8))
    noise = _noise(key, jax.tree_util.tree_map(np.zeros_like, PARAMS), SIGMA * C)
    naive = _naive_clipped([2, 5, 11], C)
    delta = _sgd_delta(new_params)
    for k in PARAMS:
        expected_update = (sum(g[k] for g, _ in naive) + np.asarray(noise[k])) / EXPECTED  # not / 3
        np.testing.assert_allclose(delta[k], expected_update, rtol=1e-4, atol=1e-6)
    assert int(step_stats["batch_size"]) == 3
    np.testing.assert_allclose(float(step_stats["clipped_fraction"]), np.mean([n > C for _, n in naive]))
    np.testing.assert_allclose(float(step_stats["mean_grad_norm"]), np.mean([n for _, n in naive]), rtol=1e-5)


def test_empty_batch_still_gets_the_full_noise():
    key = jax.random.key(11)
    inputs, labels, mask = _batch([], 8)
    assert not mask.any()
    new_params, _, step_stats = STEP(PARAMS, OPT_STATE, key, inputs, labels, mask)
    noise = _noise(key, jax.tree_util.tree_map(np.zeros_like, PARAMS), SIGMA * C)
    delta = _sgd_delta(new_params)
    for k in PARAMS:
        np.testing.assert_allclose(delta[k], np.asarray(noise[k]) / EXPECTED, rtol=1e-4, atol=1e-7)
        assert np.all(delta[k] != 0)
    assert int(step_stats["batch_size"]) == 0 and float(step_stats["clipped_fraction"]) == 0.0


def test_step_noise_std_is_sigma_c_over_expected_batch_size():
    # A loss with zero gradient: the whole SGD(1) update is the normalised noise.
    def flat_loss(params, x, y):
        return 0.0 * jnp.sum(params["w"]) * jnp.sum(x)

    params = {"w": np.zeros(100_000, np.float32)}
    sigma, c, expected = 1.1, 2.0, 64.0
    step = make_dp_step(flat_loss, optax.sgd(1.0), l2_clip_norm=c, noise_multiplier=sigma, expected_batch_size=expected)
    new_params, _, _ = step(params, optax.sgd(1.0).init(params), jax.random.key(5), *_batch(np.arange(20), 32))
    z = -np.asarray(new_params["w"], np.float64) / (sigma * c / expected)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    chi2 = (z.size - 1) * np.var(z, ddof=1)
    assert stats.chi2.ppf(5e-4, z.size - 1) < chi2 < stats.chi2.ppf(1 - 5e-4, z.size - 1)


def test_no_retracing_across_poisson_batch_sizes():
    traces = []

    def counting_loss(params, x, y):
        traces.append(1)  # runs once per trace of an enclosing jitted function, never per call
        return loss_fn(params, x, y)

    step = make_dp_step(counting_loss, optax.sgd(0.1), l2_clip_norm=1.0, noise_multiplier=1.0,
                        expected_batch_size=8.0)
    rng = np.random.default_rng(0)
    params, opt_state = jax.device_put((PARAMS, optax.sgd(0.1).init(PARAMS)))
    # Warm-up: one fused step (1 micro-batch) and one accumulated step (3 micro-batches).
    for n, indices in enumerate([np.arange(5), np.arange(23)]):
        params, opt_state, _ = step(params, opt_state, jax.random.key(n), *_batch(indices, 8))
    traced = len(traces)
    assert traced == 3  # fused, grad_sum and accumulate each traced once
    batches = [poisson_batch_indices(rng, 40, 0.2) for _ in range(8)] + [np.array([], int), np.arange(17)]
    sizes = {len(b) for b in batches}
    for n, indices in enumerate(batches):
        params, opt_state, _ = step(params, opt_state, jax.random.key(100 + n), *_batch(indices, 8))
    assert len(sizes) >= 5  # several realised sizes, 1 to 3 micro-batches
    assert len(traces) == traced
    for fn in (step.fused, step.grad_sum, step.accumulate, step.apply):
        assert fn._cache_size() == 1


def test_microbatched_step_equals_single_microbatch_step():
    key = jax.random.key(9)
    indices = np.arange(3, 14)
    one, _, stats_one = STEP(PARAMS, OPT_STATE, key, *_batch(indices, 16))  # 1 micro-batch (fused)
    many, _, stats_many = STEP(PARAMS, OPT_STATE, key, *_batch(indices, 4))  # 3 micro-batches
    for k in PARAMS:
        np.testing.assert_allclose(one[k], many[k], rtol=1e-5, atol=1e-6)
    for k in stats_one:
        np.testing.assert_allclose(stats_one[k], stats_many[k], rtol=1e-5)


def test_augmult_with_identical_copies_equals_no_augmult():
    step_k = make_dp_step(loss_fn, optax.sgd(1.0), l2_clip_norm=C, noise_multiplier=SIGMA,
                          expected_batch_size=EXPECTED, augmult=True)
    inputs, labels, mask = _batch(np.arange(5), 8)
    copies = np.repeat(inputs[:, :, None], 3, axis=2)  # [n_micro, m, K=3, 4]
    plain, _, _ = STEP(PARAMS, OPT_STATE, jax.random.key(1), inputs, labels, mask)
    multi, _, _ = step_k(PARAMS, OPT_STATE, jax.random.key(1), copies, labels, mask)
    for k in PARAMS:
        np.testing.assert_allclose(plain[k], multi[k], rtol=1e-5, atol=1e-6)


def test_nonprivate_step_uses_the_mean_gradient_of_real_examples():
    step = make_nonprivate_step(loss_fn, optax.sgd(1.0))
    indices = np.arange(10)
    new_params, _, step_stats = step(PARAMS, optax.sgd(1.0).init(PARAMS), jax.random.key(0), *_batch(indices, 4))
    mean_loss = lambda p, x, y: jnp.mean(jax.vmap(loss_fn, (None, 0, 0))(p, x, y))  # noqa: E731
    mean_grad = jax.jit(jax.grad(mean_loss))(PARAMS, INPUTS[:10], LABELS[:10])
    delta = _sgd_delta(new_params)
    for k in PARAMS:
        np.testing.assert_allclose(delta[k], mean_grad[k], rtol=1e-4, atol=1e-6)
    assert int(step_stats["batch_size"]) == 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise_multiplier=0.0), "noise_multiplier"),
        (dict(l2_clip_norm=float("inf")), "l2_clip_norm"),
        (dict(l2_clip_norm=0.0), "l2_clip_norm"),
        (dict(expected_batch_size=0), "expected_batch_size"),
    ],
)
def test_make_dp_step_rejects_bad_arguments(kwargs, match):
    args = dict(l2_clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=8.0) | kwargs
    with pytest.raises(ValueError, match=match):
        make_dp_step(loss_fn, optax.sgd(0.1), **args)


def test_step_requires_a_microbatch_axis():
    step = make_dp_step(loss_fn, optax.sgd(0.1), l2_clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=8.0)
    with pytest.raises(ValueError, match="mask"):
        step(PARAMS, optax.sgd(0.1).init(PARAMS), jax.random.key(0), INPUTS[:8], LABELS[:8], np.ones(8, bool))


@pytest.mark.parametrize("norm_chunk_size", [None, 3])
def test_two_pass_step_equals_per_example_step_with_microbatches(norm_chunk_size):
    step = make_dp_step(loss_fn, optax.sgd(1.0), l2_clip_norm=C, noise_multiplier=SIGMA, expected_batch_size=EXPECTED,
                        clipping_method="two_pass", norm_chunk_size=norm_chunk_size)
    key = jax.random.key(4)
    for indices, microbatch_size in (([1, 4, 9, 20, 33], 8), (np.arange(2, 15), 4)):  # fused; 4 micro-batches
        ref, _, ref_stats = STEP(PARAMS, OPT_STATE, key, *_batch(indices, microbatch_size))
        got, _, got_stats = step(PARAMS, OPT_STATE, key, *_batch(indices, microbatch_size))
        for k in PARAMS:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6)
        for k in ref_stats:
            np.testing.assert_allclose(got_stats[k], ref_stats[k], rtol=1e-5)


def test_two_pass_clipped_grad_sum_equals_loop():
    naive = _naive_clipped(np.arange(6), C)
    fn = jax.jit(clipped_grad_sum, static_argnums=(0, 6, 7))
    grad_sum, sums = fn(loss_fn, PARAMS, INPUTS[:8], LABELS[:8], np.arange(8) < 6, C, False, "two_pass")
    for k in PARAMS:
        np.testing.assert_allclose(grad_sum[k], sum(g[k] for g, _ in naive), rtol=1e-5, atol=1e-6)
    assert int(sums["clipped_count"]) == sum(n > C for _, n in naive)


@pytest.mark.parametrize("kwargs, match", [
    (dict(clipping_method="nope"), "clipping_method must be one of 'per_example', 'two_pass', 'ghost'"),
    (dict(clipping_method="two_pass", norm_chunk_size=0), "norm_chunk_size must be None or an integer >= 1"),
])
def test_make_dp_step_rejects_bad_clipping_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_dp_step(loss_fn, optax.sgd(0.1), l2_clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=8.0, **kwargs)
