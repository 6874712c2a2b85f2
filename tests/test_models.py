"""Models: parameter counts checked against the papers, shapes, no batch statistics, per-example."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpedu import models


def _abstract_variables(name):
    """Variables of model ``name`` as shapes only (jax.eval_shape: no compile, no compute)."""
    spec = models.get_model(name)
    x = jax.ShapeDtypeStruct((1, *spec.input_shape), jnp.float32)
    return jax.eval_shape(spec.make().init, jax.random.key(0), x)


# 26,010 and 550,570 are the sizes of Tramèr & Boneh's MNIST and CIFAR-10 CNNs; 71,010 is
# 60*1000+1000 + 1000*10+10; the usual WRN-16-4 without normalisation has 2,747,530 (checked
# below); GroupNorm adds a scale and bias per channel and weight standardisation a gain per
# output channel.
PARAM_COUNTS = {
    "mnist-mlp-pca": 71_010,
    "mnist-cnn": 26_010,
    "cifar10-cnn": 550_570,
    "wrn-16-4": 2_753_818,
    "wrn-40-4": 8_961_306,
    "wrn-tiny": 78_938,
}


def test_overrides_give_the_plain_wrn():
    spec = models.get_model("wrn-16-4")
    module = spec.make(norm="none", weight_standardization=False)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    assert models.count_params(jax.eval_shape(module.init, jax.random.key(0), x)) == 2_747_530


def test_registry_is_covered():
    assert set(PARAM_COUNTS) == set(models.MODELS)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_param_count_and_no_batch_statistics(name):
    variables = _abstract_variables(name)
    # BatchNorm would add a 'batch_stats' collection: only trainable parameters may exist.
    assert set(variables) == {"params"}
    assert models.count_params(variables) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_output_shape(name):
    spec = models.get_model(name)
    module = spec.make()
    variables = _abstract_variables(name)
    out = jax.eval_shape(module.apply, variables, jax.ShapeDtypeStruct((3, *spec.input_shape), jnp.float32))
    assert out.shape == (3, spec.num_classes)


def test_mnist_cnn_layer_shapes_match_tramer_boneh():
    params = _abstract_variables("mnist-cnn")["params"]
    shapes = {k: {n: v.shape for n, v in layer.items()} for k, layer in params.items()}
    assert shapes == {
        "Conv_0": {"kernel": (8, 8, 1, 16), "bias": (16,)},
        "Conv_1": {"kernel": (4, 4, 16, 32), "bias": (32,)},
        "Dense_0": {"kernel": (4 * 4 * 32, 32), "bias": (32,)},  # 4x4x32 after the second pool
        "Dense_1": {"kernel": (32, 10), "bias": (10,)},
    }


def test_tanh_cnn_output_is_finite_and_tanh_bounded_before_logits():
    module, params = models.init_params("mnist-cnn", 0)
    x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
    logits = jax.jit(module.apply)(params, x)
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
    # The last layer sees tanh outputs in [-1, 1]: |logits - b| <= sum_j |W_jk|.
    w, b = params["params"]["Dense_1"]["kernel"], params["params"]["Dense_1"]["bias"]
    assert bool(jnp.all(jnp.abs(logits - b) <= jnp.sum(jnp.abs(w), axis=0) + 1e-6))


def test_standardize_weight_gives_zero_mean_and_fan_in_variance():
    kernel = jax.random.normal(jax.random.key(0), (3, 3, 4, 5)) * 7.0 + 3.0
    gain = jnp.arange(1.0, 6.0)
    w = jax.jit(models.standardize_weight)(kernel, gain)
    np.testing.assert_allclose(jnp.mean(w, axis=(0, 1, 2)), 0.0, atol=1e-5)
    # variance 1 / fan_in times gain², fan_in = 3*3*4 = 36
    np.testing.assert_allclose(jnp.var(w, axis=(0, 1, 2)), gain**2 / 36.0, rtol=1e-4)


def test_wide_resnet_tiny_is_per_example():
    """Group norm and weight standardisation never mix examples: example 0's logits and the
    gradient of its loss do not change when the OTHER examples of the batch change."""
    module, params = models.init_params("wrn-tiny", 0)
    keys = jax.random.split(jax.random.key(1), 3)
    # 8x8 images keep the compiled graph small; the architecture is size-agnostic.
    batch_a = jax.random.normal(keys[0], (4, 8, 8, 3))
    batch_b = batch_a.at[1:].set(jax.random.normal(keys[1], (3, 8, 8, 3)) * 5.0 + 2.0)

    @jax.jit
    def logits_and_grad_of_first(p, batch):
        def loss(p):
            logits = module.apply(p, batch)
            return optax.softmax_cross_entropy_with_integer_labels(logits[:1], jnp.array([3]))[0], logits[0]
        return jax.grad(loss, has_aux=True)(p)

    grad_a, logits_a = logits_and_grad_of_first(params, batch_a)
    grad_b, logits_b = logits_and_grad_of_first(params, batch_b)
    np.testing.assert_allclose(logits_a, logits_b, rtol=1e-5)
    leaves_a, leaves_b = jax.tree_util.tree_leaves(grad_a), jax.tree_util.tree_leaves(grad_b)
    assert len(leaves_a) == 52  # every parameter tensor (3 + 3 stages x 15 + 4) is compared
    for ga, gb in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(ga, gb, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(depth=15), "depth"),
    (dict(width=0), "width"),
    (dict(norm="batch"), "never batch norm"),
    (dict(groups=3), "groups"),
])
def test_wide_resnet_rejects_bad_arguments(kwargs, match):
    module = models.WideResNet(**kwargs)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="mnist-cnn") as err:
        models.get_model("nope")
    assert "'nope'" in str(err.value)


@pytest.mark.parametrize("shape, stride", [((2, 13, 13, 3), 1), ((2, 5, 5, 2), 1), ((2, 32, 32, 3), 2), ((1, 9, 9, 1), 2)])
def test_max_pool_2x2_equals_flax_max_pool_values_and_gradients(shape, stride):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(models.max_pool_2x2(x, stride), nn.max_pool(x, (2, 2), strides=(stride, stride)))
    ours = jax.grad(lambda v: jnp.sum(jnp.sin(models.max_pool_2x2(v, stride))))(x)
    flax_grad = jax.grad(lambda v: jnp.sum(jnp.sin(nn.max_pool(v, (2, 2), strides=(stride, stride)))))(x)
    np.testing.assert_allclose(ours, flax_grad, rtol=1e-6)  # no ties in random data
