"""dpedu.noise: N(0, stddev²) per coordinate, independent across leaves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dpedu.noise import add_gaussian_noise


def test_noise_is_gaussian_with_the_requested_stddev():
    tree = {"a": jnp.zeros((200, 500)), "b": jnp.full(100_000, 3.0)}
    noisy = jax.jit(add_gaussian_noise)(jax.random.key(0), tree, 0.37)
    for leaf, mean in ((noisy["a"], 0.0), (noisy["b"], 3.0)):
        z = (np.asarray(leaf, np.float64).ravel() - mean) / 0.37
        assert stats.kstest(z, "norm").pvalue > 1e-3
        # (n - 1) s² / σ² ~ χ²(n - 1): two-sided test of the variance at level 1e-3.
        n = z.size
        chi2 = (n - 1) * np.var(z, ddof=1)
        assert stats.chi2.ppf(5e-4, n - 1) < chi2 < stats.chi2.ppf(1 - 5e-4, n - 1)


def test_leaves_get_independent_noise():
    tree = [jnp.zeros(50_000), jnp.zeros(50_000)]
    first, second = add_gaussian_noise(jax.random.key(1), tree, 1.0)
    assert not np.array_equal(first, second)
    # Pearson correlation of independent N(0,1) samples: sd 1/sqrt(n) ≈ 0.0045.
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.02


def test_same_key_same_noise_and_dtype_shape_kept():
    tree = {"w": jnp.zeros((3, 4), jnp.bfloat16), "b": jnp.zeros(2)}
    one = add_gaussian_noise(jax.random.key(2), tree, 1.0)
    two = add_gaussian_noise(jax.random.key(2), tree, 1.0)
    np.testing.assert_array_equal(np.asarray(one["b"]), np.asarray(two["b"]))
    assert one["w"].dtype == jnp.bfloat16 and one["w"].shape == (3, 4)


def test_zero_stddev_returns_the_tree():
    tree = {"w": jnp.arange(5.0)}
    np.testing.assert_array_equal(add_gaussian_noise(jax.random.key(3), tree, 0.0)["w"], tree["w"])


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_rejects_bad_stddev(bad):
    with pytest.raises(ValueError, match="stddev"):
        add_gaussian_noise(jax.random.key(0), {"w": jnp.zeros(2)}, bad)
