"""dpedu.ghost: ghost clipping equals the one-example loop, drops padding and NaN, refuses what it cannot do."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_clipping import _leaves, _naive_clipped_sum, _tree_norm

from dpedu import dpsgd, models
from dpedu.clipping import clipped_grad
from dpedu.ghost import GhostLoss

_CE = optax.softmax_cross_entropy_with_integer_labels


class _SequenceDense(nn.Module):
    """A Dense layer applied to every position of a [B, T, d] input, then pooled: P = T positions."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(5)(x))  # [B, T, 5]
        return nn.Dense(3)(jnp.mean(x, axis=1))


class _SameStrideConv(nn.Module):
    """'SAME' padding with stride 2 (3x3 kernel: the stride does not divide the kernel), a stride-1
    conv with explicit asymmetric padding, a bias-free conv and a 1-D conv over an extra batch axis."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, (3, 3), strides=2, padding="SAME")(x))
        x = jnp.tanh(nn.Conv(3, (2, 3), padding=((1, 0), (2, 1)), use_bias=False)(x))
        x = jnp.tanh(nn.Conv(2, (2,), padding="VALID")(x))  # [B, H, W, 2]: H is a batch axis of the 1-D conv
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _setup(module, input_shape, batch=6, num_classes=3, seed=0):
    # NumPy parameters of the module's shapes (eval_shape: no initialiser compilation) and data.
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(seed), jnp.zeros((1, *input_shape)))
    params = jax.tree_util.tree_map(lambda s: rng.normal(scale=0.5, size=s.shape).astype(np.float32), shapes)
    inputs = rng.normal(size=(batch, *input_shape)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=batch).astype(np.int32)
    return params, inputs, labels, GhostLoss(module, _CE)


_MODELS = {
    "mnist-cnn": (models.MODELS["mnist-cnn"].make(), (28, 28, 1), 10),
    "mnist-mlp-pca": (models.MODELS["mnist-mlp-pca"].make(), (60,), 10),
    "dense-on-sequence": (_SequenceDense(), (4, 7), 3),
    "same-stride-2-conv": (_SameStrideConv(), (9, 8, 2), 3),
}
_ghost_sum = jax.jit(lambda loss, *args: loss.clipped_grad_sum(*args), static_argnums=0)


def _assert_sums_equal(got, expected):
    # To 1e-5 of each leaf's largest entry: a sum over many positions and examples in float32
    # cancels, so a small entry can be off by more than 1e-5 of itself in either method.
    for e, g in zip(expected, _leaves(got)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * max(float(np.max(np.abs(e))), 0.1))


@pytest.mark.parametrize("name", list(_MODELS))
def test_ghost_equals_one_example_loop_and_per_example_method(name):
    module, input_shape, num_classes = _MODELS[name]
    params, inputs, labels, loss = _setup(module, input_shape, batch=7, num_classes=num_classes)
    mask = np.arange(7) < 5  # two padded slots
    _, norms = _naive_clipped_sum(loss, params, inputs, labels, mask, 1.0)
    c = float(np.median(norms[:5]))  # about half the real examples are clipped
    expected, naive_norms = _naive_clipped_sum(loss, params, inputs, labels, mask, c)
    grad_sum, got_norms = _ghost_sum(loss, params, inputs, labels, mask, c)
    np.testing.assert_allclose(got_norms, naive_norms, rtol=1e-5)
    _assert_sums_equal(grad_sum, expected)
    clipped, per_example_norms = jax.jit(clipped_grad(loss, c))(params, inputs, labels, mask)
    np.testing.assert_allclose(got_norms, per_example_norms, rtol=1e-5)
    _assert_sums_equal(grad_sum, [leaf.sum(axis=0) for leaf in _leaves(clipped)])


def test_layer_plan_picks_the_cheaper_norm_per_layer():
    module, input_shape, _ = _MODELS["mnist-cnn"]
    params, inputs, _, loss = _setup(module, input_shape, batch=256)
    # Convolutions: K·F <= P²(K + F), the per-example gradient is cheaper; one-position Dense: ghost norm.
    assert loss.layer_plan(params, inputs) == {"Conv_0": "per-example gradient", "Conv_1": "per-example gradient",
                                               "Dense_0": "ghost norm", "Dense_1": "ghost norm"}


def test_ghost_norm_with_several_positions_equals_the_loop():
    # A wide Dense layer on two positions: K·F = 40·40 > P²(K + F) = 4·80, so the Gram-matrix norm.
    class Wide(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(jnp.tanh(nn.Dense(40)(x)).sum(axis=1))

    params, inputs, labels, loss = _setup(Wide(), (2, 40), batch=5)
    assert loss.layer_plan(params, inputs)["Dense_0"] == "ghost norm"
    mask = np.ones(5, bool)
    expected, naive_norms = _naive_clipped_sum(loss, params, inputs, labels, mask, 0.5)
    grad_sum, norms = _ghost_sum(loss, params, inputs, labels, mask, 0.5)
    np.testing.assert_allclose(norms, naive_norms, rtol=1e-5)
    _assert_sums_equal(grad_sum, expected)


def test_padding_and_nan_examples_contribute_exactly_zero():
    module, input_shape, _ = _MODELS["same-stride-2-conv"]
    params, inputs, labels, loss = _setup(module, input_shape, batch=8)
    inputs[2] = np.nan  # a real example whose gradient is NaN: contributes zero
    inputs[6] = np.inf  # a padded slot with garbage
    mask = np.arange(8) < 6
    expected, _ = _naive_clipped_sum(loss, params, inputs, labels, mask, 1.0)
    grad_sum, norms = _ghost_sum(loss, params, inputs, labels, mask, 1.0)
    assert not np.isfinite(norms[2]) and not np.isfinite(norms[6])
    assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(grad_sum))
    _assert_sums_equal(grad_sum, expected)
    # Only the four finite real examples count: the same sum without the NaN and padded rows.
    kept = np.array([0, 1, 3, 4, 5])
    alone, _ = _ghost_sum(loss, params, inputs[kept], labels[kept], np.ones(5, bool), 1.0)
    _assert_sums_equal(grad_sum, _leaves(alone))


def test_all_masked_gives_exact_zeros_even_with_nan():
    module, input_shape, _ = _MODELS["dense-on-sequence"]
    params, inputs, labels, loss = _setup(module, input_shape, batch=4)
    inputs[:] = np.nan
    grad_sum, _ = _ghost_sum(loss, params, inputs, labels, np.zeros(4, bool), 1.0)
    assert all(np.all(leaf == 0.0) for leaf in _leaves(grad_sum))


@pytest.mark.parametrize("c", [0.0, float("inf")])
def test_clip_norm_zero_and_infinity(c):
    module, input_shape, _ = _MODELS["same-stride-2-conv"]
    params, inputs, labels, loss = _setup(module, input_shape, batch=5)
    mask = np.arange(5) < 4
    expected, _ = _naive_clipped_sum(loss, params, inputs, labels, mask, c)
    grad_sum, _ = _ghost_sum(loss, params, inputs, labels, mask, c)
    _assert_sums_equal(grad_sum, expected)
    if c == 0.0:
        assert all(np.all(leaf == 0.0) for leaf in _leaves(grad_sum))


def test_sensitivity_adding_one_example_moves_the_sum_by_at_most_c():
    module, input_shape, _ = _MODELS["same-stride-2-conv"]
    params, inputs, labels, loss = _setup(module, input_shape, batch=6)
    _, norms = _ghost_sum(loss, params, inputs, labels, np.ones(6, bool), float("inf"))
    c = 0.3 * float(norms[5])  # the added example is clipped hard
    without, _ = _ghost_sum(loss, params, inputs, labels, np.arange(6) < 5, c)
    with_it, _ = _ghost_sum(loss, params, inputs, labels, np.ones(6, bool), c)
    diff = [np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in zip(_leaves(with_it), _leaves(without))]
    assert _tree_norm(diff) == pytest.approx(c, rel=1e-4)


def test_augmult_clips_the_mean_over_copies():
    module, input_shape, _ = _MODELS["same-stride-2-conv"]
    params, _, labels, loss = _setup(module, input_shape, batch=4)
    inputs = np.random.default_rng(1).normal(size=(4, 3, *input_shape)).astype(np.float32)  # K = 3 copies
    mask = np.arange(4) < 3
    clipped, norms = jax.jit(clipped_grad(loss, 0.5, augmult=True))(params, inputs, labels, mask)
    grad_sum, got_norms = jax.jit(lambda *a: loss.clipped_grad_sum(*a, augmult=True))(params, inputs, labels, mask, 0.5)
    np.testing.assert_allclose(got_norms, norms, rtol=1e-5)
    _assert_sums_equal(grad_sum, [leaf.sum(axis=0) for leaf in _leaves(clipped)])


def test_dp_step_with_ghost_equals_per_example_step():
    module, input_shape, _ = _MODELS["dense-on-sequence"]
    params, inputs, labels, loss = _setup(module, input_shape, batch=8)
    batch = (inputs[None], labels[None], (np.arange(8) < 6)[None])  # one micro-batch: the fused step
    results = {}
    for method in ("per_example", "ghost"):
        step = dpsgd.make_dp_step(loss, optax.sgd(1.0), l2_clip_norm=0.5, noise_multiplier=1.0,
                                  expected_batch_size=10.0, clipping_method=method)
        results[method] = step(params, optax.sgd(1.0).init(params), jax.random.key(0), *batch)
    _assert_sums_equal(results["ghost"][0], _leaves(results["per_example"][0]))
    for k, v in results["per_example"][2].items():
        np.testing.assert_allclose(results["ghost"][2][k], v, rtol=1e-5)


def test_ghost_loss_is_the_usual_one_example_loss():
    module, input_shape, _ = _MODELS["mnist-mlp-pca"]
    params, inputs, labels, loss = _setup(module, input_shape, batch=2)
    expected = _CE(module.apply(params, inputs[:1])[0], labels[0])
    np.testing.assert_allclose(loss(params, inputs[0], labels[0]), expected, rtol=1e-6)


def test_dpsgd_ghost_needs_a_ghost_loss():
    with pytest.raises(ValueError, match="clipping_method='ghost' needs a loss_fn with a clipped_grad_sum method"):
        dpsgd.make_dp_step(lambda p, x, y: 0.0, optax.sgd(0.1), l2_clip_norm=1.0, noise_multiplier=1.0,
                           expected_batch_size=8.0, clipping_method="ghost")


class _Shared(nn.Module):
    @nn.compact
    def __call__(self, x):
        dense = nn.Dense(x.shape[-1])
        return dense(jnp.tanh(dense(x)))


class _MixesExamples(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x.reshape(-1, 2)).reshape(x.shape[0], -1)  # folds positions into the batch axis


@pytest.mark.parametrize("module, input_shape, match", [
    (models.MODELS["wrn-tiny"].make(), (32, 32, 3), "parameter 'params/conv_first/bias', 'params/conv_first/gain'"),
    (nn.Sequential([nn.Conv(4, (3, 3)), nn.GroupNorm(2)]), (6, 6, 2),
     "parameter 'params/layers_1/bias', 'params/layers_1/scale'"),
    (nn.Conv(4, (3, 3), feature_group_count=2), (6, 6, 2), "feature_group_count=2"),
    (nn.Conv(4, (3, 3), kernel_dilation=2), (6, 6, 2), "dilation"),
    (nn.Conv(4, (3, 3), padding="CIRCULAR"), (6, 6, 2), "padding 'CIRCULAR'"),
    (_Shared(), (4,), "called 2 times"),
    (_MixesExamples(), (4,), "example axis first"),
])
def test_unsupported_models_raise_naming_the_layer_or_parameter(module, input_shape, match):
    params, inputs, labels, loss = _setup(module, input_shape, batch=2)
    for call in (lambda: loss.layer_plan(params, inputs),
                 lambda: loss.clipped_grad_sum(params, inputs, labels, np.ones(2, bool), 1.0)):
        with pytest.raises(ValueError, match=match) as raised:
            call()
        assert "clipping_method='per_example'" in str(raised.value)
