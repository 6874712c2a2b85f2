"""DP-PCA (Abadi et al. 2016 §4): sensitivity, noise scale, projection, composed accounting."""

import dp_accounting
import numpy as np
import pytest

from dpedu import pca


def _data(n=200, d=12, seed=0):
    rng = np.random.default_rng(seed)
    # Strong low-rank structure: 3 directions with large variance plus small isotropic noise.
    basis = np.linalg.qr(rng.normal(size=(d, 3)))[0]
    return (rng.normal(size=(n, 3)) * [10.0, 6.0, 3.0]) @ basis.T + 0.1 * rng.normal(size=(n, d)), basis


def test_normalize_rows_unit_norm_and_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]])
    out = pca.normalize_rows(x)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]])


def test_sensitivity_of_covariance_is_at_most_one():
    """Adding one example changes Aᵀ A by x̂x̂ᵀ, whose Frobenius norm is ‖x̂‖² = 1 (or 0)."""
    data, _ = _data()
    rng = np.random.default_rng(1)
    base = pca.noisy_covariance(data, 0.0, rng)
    for extra in (rng.normal(size=12) * 1e4, rng.normal(size=12) * 1e-4, np.zeros(12)):
        with_extra = pca.noisy_covariance(np.vstack([data, extra]), 0.0, rng)
        change = np.linalg.norm(with_extra - base)
        assert change == pytest.approx(1.0 if extra.any() else 0.0, abs=1e-9)


def test_noise_scale_is_noise_multiplier_times_sensitivity():
    """Entries get N(0, σ²) before symmetrising: diagonal variance σ², off-diagonal σ²/2."""
    sigma, d = 3.0, 40
    data = np.zeros((5, d))  # zero rows contribute nothing: the output is pure noise
    noise = pca.noisy_covariance(data, sigma, np.random.default_rng(0))
    np.testing.assert_allclose(noise, noise.T)
    off = noise[np.triu_indices(d, 1)]
    assert np.var(np.diag(noise)) == pytest.approx(sigma**2, rel=0.25)  # 40 samples
    assert np.var(off) == pytest.approx(sigma**2 / 2, rel=0.1)  # 780 samples


def test_exact_pca_recovers_the_top_subspace():
    data, basis = _data()
    v = pca.dp_pca_projection(data, 3, 0.0, np.random.default_rng(0))
    assert v.shape == (12, 3) and v.dtype == np.float32
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-5)
    # the subspaces agree: projecting the true basis onto span(v) keeps it whole
    np.testing.assert_allclose(np.linalg.norm(v.T @ basis, axis=0), 1.0, atol=1e-2)


def test_dp_pca_with_small_noise_is_close_and_large_noise_is_not():
    data, basis = _data(n=2000)
    close = pca.dp_pca_projection(data, 3, 1.0, np.random.default_rng(0))
    assert np.linalg.norm(close.T @ basis) ** 2 > 2.9  # out of 3
    far = pca.dp_pca_projection(data, 3, 1e4, np.random.default_rng(0))
    assert np.linalg.norm(far.T @ basis) ** 2 < 2.0


def test_project_shapes():
    images = np.random.default_rng(0).uniform(size=(7, 4, 3, 1)).astype(np.float32)
    v = pca.dp_pca_projection(images, 5, 0.0, np.random.default_rng(0))
    out = pca.project(images, v)
    assert out.shape == (7, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, images.reshape(7, -1) @ v, rtol=1e-5)


def test_bad_arguments():
    data, _ = _data()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="projection_dims"):
        pca.dp_pca_projection(data, 13, 1.0, rng)
    with pytest.raises(ValueError, match="projection_dims"):
        pca.dp_pca_projection(data, 0, 1.0, rng)
    with pytest.raises(ValueError, match="noise_multiplier"):
        pca.noisy_covariance(data, -1.0, rng)
    with pytest.raises(ValueError, match="noise_multiplier"):
        pca.pca_dp_event(0.0)


def test_composed_event_costs_more_than_training_alone():
    training = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(4.0)), 3000)
    composed = pca.composed_dp_event(7.0, training)
    assert composed == dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(7.0), training])

    def eps(event):
        accountant = dp_accounting.pld.PLDAccountant()
        accountant.compose(event)
        return accountant.get_epsilon(1e-5)

    alone, pca_only, both = eps(training), eps(pca.pca_dp_event(7.0)), eps(composed)
    assert alone < both < alone + pca_only  # composition: dearer than either, cheaper than the sum
