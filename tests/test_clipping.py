"""dpedu.clipping: exact per-example clipping, padding safety, augmult order, edge cases."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpedu.clipping import clip_to_norm, clipped_grad, mean_over_copies


def _tree_norm(tree):
    return float(np.sqrt(sum(np.sum(np.asarray(leaf, np.float64) ** 2) for leaf in jax.tree_util.tree_leaves(tree))))


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(16)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3)(x)


class _ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, (3, 3), strides=2, padding="SAME")(x))
        x = nn.max_pool(x, (2, 2), strides=(1, 1))
        x = jnp.tanh(nn.Conv(6, (2, 2), padding="VALID")(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _setup(module, input_shape, batch=8, seed=0):
    # NumPy parameters of the module's shapes (eval_shape: no compilation; Flax's own
    # initialisers take seconds to compile on CPU) and NumPy data.
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.key(seed), jnp.zeros((1, *input_shape)))
    params = jax.tree_util.tree_map(lambda s: rng.normal(scale=0.5, size=s.shape).astype(np.float32), shapes)
    inputs = rng.normal(size=(batch, *input_shape)).astype(np.float32)
    labels = rng.integers(0, 3, size=batch).astype(np.int32)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(module.apply(p, x[None])[0], y)

    return params, inputs, labels, loss_fn


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


# ---- clip_to_norm -------------------------------------------------------------------------

def test_clip_to_norm_scales_to_c_when_above_and_keeps_when_below():
    tree = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # global norm 5
    clipped, norm = clip_to_norm(tree, 1.0)
    assert float(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"], [[0.8]], rtol=1e-6)
    same, _ = clip_to_norm(tree, 5.5)
    np.testing.assert_array_equal(same["a"], tree["a"])
    np.testing.assert_array_equal(same["b"], tree["b"])


@pytest.mark.parametrize(
    "tree, c, expected, expected_norm",
    [
        ({"w": jnp.zeros(3)}, 1.0, [0.0, 0.0, 0.0], 0.0),  # zero gradient: no 0/0
        ({"w": jnp.zeros(3)}, 0.0, [0.0, 0.0, 0.0], 0.0),
        ({"w": jnp.array([1.0, -2.0, 2.0])}, 0.0, [0.0, 0.0, 0.0], 3.0),  # C = 0: zeros
        ({"w": jnp.array([1.0, -2.0, 2.0])}, float("inf"), [1.0, -2.0, 2.0], 3.0),  # C = inf: identity
        ({"w": jnp.array([1.0, jnp.nan, 2.0])}, 1.0, [0.0, 0.0, 0.0], float("nan")),  # NaN: zeroed
        ({"w": jnp.array([1.0, jnp.inf, 2.0])}, 1.0, [0.0, 0.0, 0.0], float("inf")),  # inf: zeroed
        ({"w": jnp.array([1e30, 1.0])}, 1.0, [0.0, 0.0], float("inf")),  # squared norm overflows
    ],
)
def test_clip_to_norm_edge_cases(tree, c, expected, expected_norm):
    clipped, norm = clip_to_norm(tree, c)
    np.testing.assert_array_equal(clipped["w"], np.asarray(expected, np.float32))
    np.testing.assert_equal(float(norm), expected_norm)


def test_clip_to_norm_bound_holds_for_random_trees_under_jit():
    clip = jax.jit(clip_to_norm)
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 1e3):
        tree = [rng.normal(size=(5, 7)).astype(np.float32) * scale, rng.normal(size=11).astype(np.float32)]
        clipped, norm = clip(tree, 0.7)
        assert _tree_norm(clipped) <= 0.7 * (1 + 1e-6)
        assert float(norm) == pytest.approx(_tree_norm(tree), rel=1e-5)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "1", None, True])
def test_clip_to_norm_rejects_bad_clip_norm(bad):
    with pytest.raises(ValueError, match="l2_clip_norm"):
        clip_to_norm({"w": jnp.ones(2)}, bad)


# ---- clipped_grad --------------------------------------------------------------------------

@pytest.mark.parametrize("module, input_shape", [(_MLP(), (5,)), (_ConvNet(), (8, 8, 2))])
def test_clipped_grad_matches_one_example_at_a_time_loop(module, input_shape):
    params, inputs, labels, loss_fn = _setup(module, input_shape)
    one_grad = jax.jit(jax.grad(loss_fn))  # the plain gradient of ONE example (jit: eager is slow)
    naive_norms = [_tree_norm(one_grad(params, inputs[i], labels[i])) for i in range(len(labels))]
    c = float(np.median(naive_norms))  # about half the examples are clipped
    fn = clipped_grad(loss_fn, c)
    clipped, norms = jax.jit(fn)(params, inputs, labels, np.ones(len(labels), bool))
    np.testing.assert_allclose(norms, naive_norms, rtol=1e-5)
    for i in range(len(labels)):
        factor = min(1.0, c / naive_norms[i])
        expected = [g * factor for g in _leaves(one_grad(params, inputs[i], labels[i]))]
        got = [leaf[i] for leaf in _leaves(clipped)]
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
        assert _tree_norm(got) <= c * (1 + 1e-5)
    assert fn.l2_sensitivity == c


def test_masked_examples_contribute_exactly_zero_even_when_nan():
    params, inputs, labels, loss_fn = _setup(_MLP(), (5,))
    inputs[5] = np.nan  # a padded slot with garbage must not leak
    mask = np.array([True] * 5 + [False] * 3)
    clipped, _ = jax.jit(clipped_grad(loss_fn, 1.0))(params, inputs, labels, mask)
    for leaf in _leaves(clipped):
        assert np.all(leaf[5:] == 0.0)
        assert np.all(np.isfinite(leaf))
        assert np.any(leaf[:5] != 0.0)


def test_augmult_averages_gradients_before_clipping():
    # Linear loss w·x: the gradient of copy k is x_k. Copies (10, 0) and (0, 0), C = 1:
    # average-then-clip = clip((5, 0)) = (1, 0); clip-then-average would give (0.5, 0).
    def loss_fn(params, x, y):
        del y
        return jnp.dot(params["w"], x)

    params = {"w": jnp.zeros(2)}
    inputs = jnp.array([[[10.0, 0.0], [0.0, 0.0]]])  # [B=1, K=2, 2]
    fn = jax.jit(clipped_grad(loss_fn, 1.0, augmult=True))
    clipped, norms = fn(params, inputs, jnp.zeros(1), jnp.ones(1, bool))
    np.testing.assert_allclose(clipped["w"], [[1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(norms, [5.0], rtol=1e-6)
    np.testing.assert_allclose(mean_over_copies(loss_fn)({"w": jnp.ones(2)}, inputs[0], 0), 5.0)


def test_clipped_grad_rejects_negative_clip_norm():
    with pytest.raises(ValueError, match=r"l2_clip_norm must be in \[0, inf\]"):
        clipped_grad(lambda p, x, y: 0.0, -0.5)
