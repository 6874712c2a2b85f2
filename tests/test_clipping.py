"""dpedu.clipping: exact per-example clipping, padding safety, augmult order, edge cases."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpedu.clipping import (
    clip_factors,
    clip_to_norm,
    clipped_grad,
    mean_over_copies,
    per_example_grad_norms,
    two_pass_clipped_grad_sum,
)


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


# ---- two-pass clipping --------------------------------------------------------------------

def _naive_clipped_sum(loss_fn, params, inputs, labels, mask, c):
    """Σ of clipped gradients, one example at a time (NaN / inf gradients and padding dropped)."""
    one_grad = jax.jit(jax.grad(loss_fn))
    total = [np.zeros(np.shape(leaf)) for leaf in _leaves(params)]
    norms = []
    for i in range(len(labels)):
        grad = [np.asarray(g, np.float64) for g in _leaves(one_grad(params, inputs[i], labels[i]))]
        norm = _tree_norm(grad)
        norms.append(norm)
        if mask[i] and np.isfinite(norm):
            factor = 1.0 if norm <= c else c / norm
            total = [t + g * factor for t, g in zip(total, grad)]
    return total, np.array(norms)


_two_pass = jax.jit(two_pass_clipped_grad_sum, static_argnums=0, static_argnames=("augmult", "chunk_size"))


@pytest.mark.parametrize("module, input_shape, chunk_size", [
    (_MLP(), (5,), None), (_MLP(), (5,), 3), (_ConvNet(), (8, 8, 2), None), (_ConvNet(), (8, 8, 2), 4),
])
def test_two_pass_equals_one_example_loop_with_padding(module, input_shape, chunk_size):
    params, inputs, labels, loss_fn = _setup(module, input_shape, batch=10)
    mask = np.arange(10) < 7  # three padded slots
    _, norms = _naive_clipped_sum(loss_fn, params, inputs, labels, mask, 1.0)
    c = float(np.median(norms[:7]))  # about half the real examples are clipped
    expected, naive_norms = _naive_clipped_sum(loss_fn, params, inputs, labels, mask, c)
    grad_sum, got_norms = _two_pass(loss_fn, params, inputs, labels, mask, c, chunk_size=chunk_size)
    np.testing.assert_allclose(got_norms, naive_norms, rtol=1e-5)
    for e, g in zip(expected, _leaves(grad_sum)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_two_pass_equals_per_example_method():
    params, inputs, labels, loss_fn = _setup(_ConvNet(), (8, 8, 2), batch=6)
    mask = np.ones(6, bool)
    clipped, norms = jax.jit(clipped_grad(loss_fn, 0.5))(params, inputs, labels, mask)
    grad_sum, two_pass_norms = _two_pass(loss_fn, params, inputs, labels, mask, 0.5)
    np.testing.assert_allclose(two_pass_norms, norms, rtol=1e-5)
    for per_example, summed in zip(_leaves(clipped), _leaves(grad_sum)):
        np.testing.assert_allclose(summed, per_example.sum(axis=0), rtol=1e-5, atol=1e-6)


def test_two_pass_drops_nan_examples_and_nan_padding():
    params, inputs, labels, loss_fn = _setup(_MLP(), (5,), batch=8)
    inputs[2] = np.nan  # a real example whose gradient is NaN: contributes zero
    inputs[6] = np.inf  # a padded slot with garbage
    mask = np.arange(8) < 6
    expected, naive_norms = _naive_clipped_sum(loss_fn, params, inputs, labels, mask, 1.0)
    grad_sum, norms = _two_pass(loss_fn, params, inputs, labels, mask, 1.0, chunk_size=3)
    assert np.isnan(norms[2]) and np.isnan(norms[6])
    for e, g in zip(expected, _leaves(grad_sum)):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("c", [0.0, float("inf")])
def test_two_pass_clip_norm_zero_and_infinity(c):
    params, inputs, labels, loss_fn = _setup(_MLP(), (5,), batch=6)
    mask = np.arange(6) < 5
    expected, _ = _naive_clipped_sum(loss_fn, params, inputs, labels, mask, c)
    grad_sum, _ = _two_pass(loss_fn, params, inputs, labels, mask, c)
    for e, g in zip(expected, _leaves(grad_sum)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
        if c == 0.0:
            assert np.all(g == 0.0)


def test_two_pass_all_masked_gives_exact_zeros_even_with_nan():
    params, inputs, labels, loss_fn = _setup(_MLP(), (5,), batch=4)
    inputs[:] = np.nan
    grad_sum, _ = _two_pass(loss_fn, params, inputs, labels, np.zeros(4, bool), 1.0)
    assert all(np.all(leaf == 0.0) for leaf in _leaves(grad_sum))


def test_two_pass_augmult_averages_before_clipping():
    # As test_augmult_averages_gradients_before_clipping: average-then-clip gives (1, 0).
    def loss_fn(params, x, y):
        del y
        return jnp.dot(params["w"], x)

    inputs = jnp.array([[[10.0, 0.0], [0.0, 0.0]], [[0.0, 0.2], [0.0, 0.2]]])  # [B=2, K=2, 2]
    grad_sum, norms = _two_pass(loss_fn, {"w": jnp.zeros(2)}, inputs, jnp.zeros(2), jnp.ones(2, bool), 1.0,
                                augmult=True)
    np.testing.assert_allclose(norms, [5.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(grad_sum["w"], [1.0, 0.2], rtol=1e-6)


def test_two_pass_sensitivity_adding_one_example_moves_the_sum_by_at_most_c():
    params, inputs, labels, loss_fn = _setup(_ConvNet(), (8, 8, 2), batch=8)
    inputs[7] *= 1e3  # a large-gradient example, clipped hard
    c = 0.3
    without, _ = _two_pass(loss_fn, params, inputs, labels, np.arange(8) < 7, c)
    with_it, norms = _two_pass(loss_fn, params, inputs, labels, np.ones(8, bool), c)
    assert float(norms[7]) > 10 * c
    diff = [np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in zip(_leaves(with_it), _leaves(without))]
    assert _tree_norm(diff) == pytest.approx(c, rel=1e-4)
    assert _tree_norm(diff) <= c * (1 + 1e-5)


def test_per_example_grad_norms_chunks_give_the_same_norms():
    params, inputs, labels, loss_fn = _setup(_MLP(), (5,), batch=7)
    norms = jax.jit(per_example_grad_norms, static_argnums=0, static_argnames="chunk_size")
    whole = norms(loss_fn, params, inputs, labels)
    for chunk_size in (1, 3, 7, 50):
        np.testing.assert_allclose(norms(loss_fn, params, inputs, labels, chunk_size=chunk_size), whole, rtol=1e-6)
    with pytest.raises(ValueError, match="chunk_size must be None or an integer >= 1"):
        per_example_grad_norms(loss_fn, params, inputs, labels, chunk_size=0)


def test_clip_factors_edge_cases():
    norms = jnp.array([0.5, 2.0, 0.0, jnp.nan, jnp.inf, 2.0])
    mask = np.array([True, True, True, True, True, False])
    np.testing.assert_allclose(clip_factors(norms, mask, 1.0), [1.0, 0.5, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(clip_factors(norms, mask, 0.0), [0, 0, 1, 0, 0, 0])  # 1 · zero gradient
    np.testing.assert_array_equal(clip_factors(norms, mask, float("inf")), [1, 1, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="l2_clip_norm"):
        clip_factors(norms, mask, -1.0)
