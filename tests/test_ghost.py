"""dpedu.ghost: ghost clipping equals the one-example loop, drops padding and NaN, refuses what it cannot do."""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_clipping import _leaves, _naive_clipped_sum, _tree_norm

from dpedu import dpsgd, models
from dpedu.clipping import clipped_grad
from dpedu.ghost import GhostLoss, _standardized_squares

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


class _NormsAndStandardisedConvs(nn.Module):
    """Every GroupNorm / WSConv variant the Wide-ResNets do not exercise: a stride-2 WSConv on an
    odd size ("SAME" pads unevenly), a 1x1 stride-2 WSConv, GroupNorm by group size, without scale
    or offset, and over the channels of each position only ([B, T, C]: per-position statistics)."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(models.WSConv(6, (3, 3), strides=2, name="ws_stride_2")(x))  # 7x7 -> 4x4
        x = nn.GroupNorm(num_groups=None, group_size=1, use_bias=False)(x)
        x = models.WSConv(4, (1, 1), strides=2, name="ws_1x1")(jnp.tanh(x))  # -> 2x2
        x = nn.GroupNorm(num_groups=2, use_scale=False)(x)
        x = x.reshape(x.shape[0], -1, 4)  # [B, T=4, C=4]
        x = nn.GroupNorm(num_groups=2, reduction_axes=(-1,), epsilon=1e-3)(jnp.tanh(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _setup(module, input_shape, batch=6, num_classes=3, seed=0):
    # NumPy parameters of the module's shapes (eval_shape: no initialiser compilation) and data.
    # Normalisation scales and WSConv gains are 1 + N(0, 0.2²) (a gain near 0 is no layer one trains).
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(seed), jnp.zeros((1, *input_shape)))

    def draw(path, s):
        if path[-1].key in ("scale", "gain"):
            return (1.0 + rng.normal(scale=0.2, size=s.shape)).astype(np.float32)
        return rng.normal(scale=0.5, size=s.shape).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(draw, shapes)
    inputs = rng.normal(size=(batch, *input_shape)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=batch).astype(np.int32)
    return params, inputs, labels, GhostLoss(module, _CE)


def _registered(name, **overrides):
    spec = models.MODELS[name]
    return spec.make(**overrides), spec.input_shape, spec.num_classes


# Every registered model. The Wide-ResNets at width 1 on 8x8 images (any size works: "SAME"
# convolutions, global pooling): the same layers, a fraction of the compile and run time.
_MODELS = {
    "mnist-cnn": _registered("mnist-cnn"),
    "mnist-mlp-pca": _registered("mnist-mlp-pca"),
    "cifar10-cnn": _registered("cifar10-cnn"),
    "wrn-tiny": (models.MODELS["wrn-tiny"].make(), (8, 8, 3), 10),
    "wrn-16-4": (models.MODELS["wrn-16-4"].make(width=1), (8, 8, 3), 10),
    "wrn-40-4": (models.MODELS["wrn-40-4"].make(width=1), (8, 8, 3), 10),
    # A rung of De et al.'s ablation ladder (dpedu.configs: norm / weight_standardization overrides).
    "wrn-tiny-plain-conv": (models.MODELS["wrn-tiny"].make(weight_standardization=False), (8, 8, 3), 10),
    "dense-on-sequence": (_SequenceDense(), (4, 7), 3),
    "same-stride-2-conv": (_SameStrideConv(), (9, 8, 2), 3),
    "norms-and-standardised-convs": (_NormsAndStandardisedConvs(), (7, 7, 2), 3),
}
_SLOW = {"wrn-16-4", "wrn-40-4"}  # 16 / 40 convolutions and as many group norms to compile, three times
# Checked in float64: with random parameters these deep (or, for the CIFAR-10 CNN, saturated)
# models' own float32 forward and backward passes are off by 1e-4 to 1e-3 of a leaf's largest
# entry or of a norm (measured against float64: the plain batched gradient as much as the
# one-example loop and ghost clipping), so float32 cannot show agreement to 1e-5 for them; in
# float64 the three methods agree to 1e-10 or better.
# Float32 ghost clipping on them: test_ghost_without_clipping_equals_the_batched_gradient_in_float32.
_FLOAT64 = {"cifar10-cnn", "wrn-tiny", "wrn-16-4", "wrn-40-4", "wrn-tiny-plain-conv"}
_ghost_sum = jax.jit(lambda loss, *args: loss.clipped_grad_sum(*args), static_argnums=0)


def _in_precision(name, params, inputs):
    """``(context, params, inputs)``: x64 enabled and float64 arrays for the models of _FLOAT64."""
    if name not in _FLOAT64:
        return contextlib.nullcontext(), params, inputs
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
    return jax.enable_x64(True), params, np.asarray(inputs, np.float64)


def _param_cases(names):
    return [pytest.param(name, marks=pytest.mark.slow) if name in _SLOW else name for name in names]


def _assert_sums_equal(got, expected):
    # To 1e-5 of each leaf's largest entry: a sum over many positions and examples in float32
    # cancels, so a small entry can be off by more than 1e-5 of itself in either method.
    for e, g in zip(expected, _leaves(got)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * max(float(np.max(np.abs(e))), 0.1))


def test_every_registered_model_is_tested():
    assert set(models.MODELS) <= set(_MODELS)


@pytest.mark.parametrize("name", _param_cases(_MODELS))
def test_ghost_equals_one_example_loop_and_per_example_method(name):
    module, input_shape, num_classes = _MODELS[name]
    params, inputs, labels, loss = _setup(module, input_shape, batch=7, num_classes=num_classes)
    mask = np.arange(7) < 5  # two padded slots
    context, params, inputs = _in_precision(name, params, inputs)
    with context:
        _, norms = _ghost_sum(loss, params, inputs, labels, mask, float("inf"))  # compiled once, for any C
        c = float(np.median(norms[:5]))  # about half the real examples are clipped
        expected, naive_norms = _naive_clipped_sum(loss, params, inputs, labels, mask, c)
        grad_sum, got_norms = _ghost_sum(loss, params, inputs, labels, mask, c)
        np.testing.assert_allclose(got_norms, naive_norms, rtol=1e-5)
        _assert_sums_equal(grad_sum, expected)
        clipped, per_example_norms = jax.jit(clipped_grad(loss, c))(params, inputs, labels, mask)
        np.testing.assert_allclose(got_norms, per_example_norms, rtol=1e-5)
        _assert_sums_equal(grad_sum, [leaf.sum(axis=0) for leaf in _leaves(clipped)])


@pytest.mark.parametrize("name", ["wrn-tiny", "cifar10-cnn", "norms-and-standardised-convs"])
def test_ghost_without_clipping_equals_the_batched_gradient_in_float32(name):
    # C = inf: the sum of the real examples' gradients, which plain back-propagation of the masked
    # batch loss also gives; both start from the same float32 batched forward pass.
    module, input_shape, num_classes = _MODELS[name]
    params, inputs, labels, loss = _setup(module, input_shape, batch=6, num_classes=num_classes)
    mask = np.arange(6) < 5

    def batch_loss(p):
        losses = jax.vmap(_CE)(module.apply(p, inputs), labels)
        return jnp.sum(jnp.where(mask, losses, 0.0))

    expected = jax.jit(jax.grad(batch_loss))(params)
    grad_sum, _ = _ghost_sum(loss, params, inputs, labels, mask, float("inf"))
    assert all(leaf.dtype == np.float32 for leaf in _leaves(grad_sum))
    _assert_sums_equal(grad_sum, _leaves(expected))


def test_layer_plan_picks_the_cheaper_norm_per_layer():
    module, input_shape, _ = _MODELS["mnist-cnn"]
    params, inputs, _, loss = _setup(module, input_shape, batch=256)
    # Convolutions: K·F <= P²(K + F), the per-example gradient is cheaper; one-position Dense: ghost norm.
    assert loss.layer_plan(params, inputs) == {"Conv_0": "per-example gradient", "Conv_1": "per-example gradient",
                                               "Dense_0": "ghost norm", "Dense_1": "ghost norm"}


@pytest.mark.parametrize("name, layers", [("wrn-tiny", 21), ("wrn-16-4", 33), ("wrn-40-4", 81)])
def test_layer_plan_covers_every_wide_resnet_layer(name, layers):
    # The registered models at full size on CIFAR-10 shapes: abstract shapes only, nothing is compiled.
    spec = models.MODELS[name]
    module = spec.make()
    params = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, *spec.input_shape)))
    plan = GhostLoss(module, _CE).layer_plan(params, jax.ShapeDtypeStruct((16, *spec.input_shape), jnp.float32))
    assert len(plan) == layers and list(plan)[0] == "conv_first" and plan["logits"] == "ghost norm"
    # Group norms and weight-standardised convolutions always form the per-example gradient.
    assert all(kind == "per-example gradient" for layer, kind in plan.items() if layer != "logits")
    assert set(plan) == set(params["params"])  # every module with parameters, each once
    # With augmult the copies are positions of one example: the same layers.
    augmult = GhostLoss(module, _CE).layer_plan(params, jax.ShapeDtypeStruct((4, 3, *spec.input_shape), jnp.float32),
                                                augmult=True)
    assert list(augmult) == list(plan)


@pytest.mark.parametrize("clamped", ["none", "below eps", "at eps"])
def test_standardized_squares_is_the_norm_of_the_standardisation_vjp(clamped):
    # The closed-form pullback of models.standardize_weight against jax.vjp of it, example by
    # example, including a channel whose fan_in·var is below eps (clamped: no variance term) and
    # one exactly at eps (JAX splits max's derivative 1/2 : 1/2 at a tie).
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 2, 4, 5)).astype(np.float32)
    gain = (1.0 + 0.2 * rng.normal(size=5)).astype(np.float32)
    hat_grads = rng.normal(size=(6, 3, 2, 4, 5)).astype(np.float32)
    eps = 1e-4
    if clamped == "below eps":
        kernel[..., 1] = 0.3  # variance 0
    elif clamped == "at eps":
        # Channel 2's fan_in·var, computed as standardize_weight does: it sits exactly at the clamp.
        eps = float((jnp.var(kernel, axis=(0, 1, 2), keepdims=True) * np.prod(kernel.shape[:-1]))[..., 2].item())
    _, pullback = jax.vjp(lambda w, s: models.standardize_weight(w, s, eps), kernel, gain)
    expected = [_tree_norm(pullback(h)) ** 2 for h in hat_grads]
    got = jax.jit(_standardized_squares, static_argnums=2)(kernel, gain, eps, hat_grads)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


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


@pytest.mark.parametrize("name", ["same-stride-2-conv", "wrn-tiny"])
def test_padding_and_nan_examples_contribute_exactly_zero(name):
    module, input_shape, num_classes = _MODELS[name]
    # Batch 7 as in test_ghost_equals_one_example_loop_and_per_example_method: its compilation serves.
    params, inputs, labels, loss = _setup(module, input_shape, batch=7, num_classes=num_classes)
    inputs[2] = np.nan  # a real example whose gradient is NaN: contributes zero
    inputs[6] = np.inf  # a padded slot with garbage
    mask = np.arange(7) < 6
    context, params, inputs = _in_precision(name, params, inputs)
    with context:
        expected, _ = _naive_clipped_sum(loss, params, inputs, labels, mask, 1.0)
        grad_sum, norms = _ghost_sum(loss, params, inputs, labels, mask, 1.0)
        assert not np.isfinite(norms[2]) and not np.isfinite(norms[6])
        assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(grad_sum))
        _assert_sums_equal(grad_sum, expected)
        # Only the four finite real examples count: the same sum without the NaN and padded rows
        # (they are replaced by finite padding, so the same compiled function serves).
        kept = np.isin(np.arange(7), [0, 1, 3, 4, 5])
        alone, _ = _ghost_sum(loss, params, np.where(kept.reshape(-1, *[1] * len(input_shape)), inputs, 0.0),
                              labels, kept, 1.0)
        _assert_sums_equal(grad_sum, _leaves(alone))


def test_all_masked_gives_exact_zeros_even_with_nan():
    for name in ("dense-on-sequence", "norms-and-standardised-convs"):
        module, input_shape, _ = _MODELS[name]
        params, inputs, labels, loss = _setup(module, input_shape, batch=4)
        inputs[:] = np.nan
        grad_sum, _ = _ghost_sum(loss, params, inputs, labels, np.zeros(4, bool), 1.0)
        assert all(np.all(leaf == 0.0) for leaf in _leaves(grad_sum))


@pytest.mark.parametrize("name", ["same-stride-2-conv", "norms-and-standardised-convs"])
@pytest.mark.parametrize("c", [0.0, float("inf")])
def test_clip_norm_zero_and_infinity(c, name):
    module, input_shape, _ = _MODELS[name]
    params, inputs, labels, loss = _setup(module, input_shape, batch=5)
    mask = np.arange(5) < 4
    expected, _ = _naive_clipped_sum(loss, params, inputs, labels, mask, c)
    grad_sum, _ = _ghost_sum(loss, params, inputs, labels, mask, c)
    _assert_sums_equal(grad_sum, expected)
    if c == 0.0:
        assert all(np.all(leaf == 0.0) for leaf in _leaves(grad_sum))


@pytest.mark.parametrize("name", ["same-stride-2-conv", "norms-and-standardised-convs"])
def test_sensitivity_adding_one_example_moves_the_sum_by_at_most_c(name):
    module, input_shape, _ = _MODELS[name]
    params, inputs, labels, loss = _setup(module, input_shape, batch=6)
    _, norms = _ghost_sum(loss, params, inputs, labels, np.ones(6, bool), float("inf"))
    c = 0.3 * float(norms[5])  # the added example is clipped hard
    without, _ = _ghost_sum(loss, params, inputs, labels, np.arange(6) < 5, c)
    with_it, _ = _ghost_sum(loss, params, inputs, labels, np.ones(6, bool), c)
    diff = [np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in zip(_leaves(with_it), _leaves(without))]
    assert _tree_norm(diff) == pytest.approx(c, rel=1e-4)


@pytest.mark.parametrize("name", ["same-stride-2-conv", "wrn-tiny"])
def test_augmult_clips_the_mean_over_copies(name):
    module, input_shape, num_classes = _MODELS[name]
    params, _, labels, loss = _setup(module, input_shape, batch=4, num_classes=num_classes)
    inputs = np.random.default_rng(1).normal(size=(4, 3, *input_shape)).astype(np.float32)  # K = 3 copies
    mask = np.arange(4) < 3
    context, params, inputs = _in_precision(name, params, inputs)
    with context:
        clipped, norms = jax.jit(clipped_grad(loss, 0.5, augmult=True))(params, inputs, labels, mask)
        grad_sum, got_norms = jax.jit(lambda *a: loss.clipped_grad_sum(*a, augmult=True))(params, inputs, labels,
                                                                                             mask, 0.5)
        np.testing.assert_allclose(got_norms, norms, rtol=1e-5)
        _assert_sums_equal(grad_sum, [leaf.sum(axis=0) for leaf in _leaves(clipped)])


@pytest.mark.parametrize("name", ["dense-on-sequence", "wrn-tiny"])
def test_dp_step_with_ghost_equals_per_example_step(name):
    module, input_shape, num_classes = _MODELS[name]
    params, inputs, labels, loss = _setup(module, input_shape, batch=8, num_classes=num_classes)
    context, params, inputs = _in_precision(name, params, inputs)
    with context:
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


class _CustomParam(nn.Module):
    @nn.compact
    def __call__(self, x):
        temperature = self.param("temperature", nn.initializers.ones, ())
        return nn.Dense(3)(x) / temperature


class _SubclassedWSConv(models.WSConv):
    """Computes what WSConv does, but a subclass could compute anything: not captured."""


class _MaskedGroupNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.GroupNorm(num_groups=2)(x, mask=x > 0)


@pytest.mark.parametrize("module, input_shape, match", [
    (nn.Sequential([nn.Conv(4, (3, 3)), nn.LayerNorm()]), (6, 6, 2),
     "parameter 'params/layers_1/bias', 'params/layers_1/scale'"),
    (_CustomParam(), (4,), "parameter 'params/temperature'"),
    (nn.Sequential([_SubclassedWSConv(4), nn.GroupNorm(2)]), (6, 6, 2),
     "parameter 'params/layers_0/bias', 'params/layers_0/gain', 'params/layers_0/kernel'"),
    (nn.GroupNorm(num_groups=2, reduction_axes=(0, 1, 2, 3)), (6, 6, 4), "include the example axis"),
    (_MaskedGroupNorm(), (6, 6, 4), "a mask"),
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
