"""dpedu.mechanisms: calibration values, the exact privacy profile, privacy loss, trade-off curves."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from dp_accounting import gaussian_mechanism as dpa_gaussian
from scipy import stats

from dpedu import mechanisms as m

GRID = [(eps, delta) for eps in (0.05, 0.3, 0.9, 1.0, 3.0, 10.0) for delta in (1e-3, 1e-5, 1e-10)]


def balle_wang_delta(eps, sigma):
    """Theorem 8 of Balle & Wang (2018) written directly with scipy.stats (independent code)."""
    mu = 1 / sigma
    return stats.norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * stats.norm.cdf(-mu / 2 - eps / mu)


# --- classic calibration -----------------------------------------------------------------------

def test_classic_noise_multiplier_formula():
    assert m.classic_noise_multiplier(0.5, 1e-5) == pytest.approx(math.sqrt(2 * math.log(1.25e5)) / 0.5, rel=1e-15)
    assert m.classic_noise_multiplier(0.5, 1e-5) == pytest.approx(9.6896105, rel=1e-7)


@pytest.mark.parametrize("eps", [1.0, 1.5, 8.0])
def test_classic_noise_multiplier_refuses_epsilon_at_least_one(eps):
    with pytest.raises(ValueError, match=r"epsilon must be in \(0, 1\)"):
        m.classic_noise_multiplier(eps, 1e-5)


def test_classic_epsilon_abadi_per_step_warns_outside_theorem():
    # Abadi et al.'s slides: σ = 4, δ = 1e-5 gives a per-step ε of about 1.2.
    with pytest.warns(UserWarning, match="outside Dwork & Roth Thm A.1"):
        eps = m.classic_epsilon(4.0, 1e-5)
    assert eps == pytest.approx(1.2112013, rel=1e-7)
    # ... which happens to hold here: the exact δ at that ε is far below 1e-5.
    assert m.analytic_delta(eps, 4.0) == pytest.approx(5.5246e-08, rel=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.classic_epsilon(10.0, 1e-5) == pytest.approx(0.48448053, rel=1e-7)


# --- exact (analytic) calibration --------------------------------------------------------------

@pytest.mark.parametrize("eps", [0.0, 0.2, 1.0, 4.0, 20.0])
@pytest.mark.parametrize("sigma", [0.3, 1.0, 4.0])
def test_analytic_delta_matches_theorem(eps, sigma):
    expected = balle_wang_delta(eps, sigma)
    if expected > 1e-12:  # the direct formula has no digits left below that
        assert m.analytic_delta(eps, sigma) == pytest.approx(expected, rel=1e-9)


def test_analytic_delta_values_and_vectorised():
    assert m.analytic_delta(1.0, 1.0) == pytest.approx(0.12693674, rel=1e-7)
    assert m.analytic_delta(0.0, 2.0) == pytest.approx(2 * stats.norm.cdf(0.25) - 1, rel=1e-12)
    curve = m.analytic_delta(np.linspace(0, 30, 61), 1.0)
    assert curve.shape == (61,) and np.all(np.diff(curve) <= 0) and np.all(curve >= 0)
    # Log-space evaluation keeps relative precision where the direct subtraction is all round-off.
    for delta in (1e-30, 1e-100):
        eps = m.analytic_epsilon(1.0, delta)
        assert eps == pytest.approx(dpa_gaussian.get_epsilon_gaussian(1.0, delta), rel=1e-9)
        assert m.analytic_delta(eps, 1.0) == pytest.approx(delta, rel=1e-8)


@pytest.mark.parametrize("eps,delta", GRID)
def test_analytic_sigma_gives_exactly_target_delta(eps, delta):
    sigma = m.analytic_noise_multiplier(eps, delta)
    assert m.analytic_delta(eps, sigma) <= delta
    assert m.analytic_delta(eps, sigma) == pytest.approx(delta, rel=1e-9)
    assert m.analytic_delta(eps, sigma * (1 - 1e-6)) > delta  # smallest σ that works
    assert sigma == pytest.approx(dpa_gaussian.get_sigma_gaussian(eps, delta), rel=1e-9)
    if eps < 1:
        assert m.classic_noise_multiplier(eps, delta) >= sigma


@pytest.mark.parametrize("eps,delta", GRID)
def test_analytic_epsilon_inverts_analytic_sigma(eps, delta):
    sigma = m.analytic_noise_multiplier(eps, delta)
    assert m.analytic_epsilon(sigma, delta) == pytest.approx(eps, rel=1e-9)
    assert m.analytic_delta(m.analytic_epsilon(sigma, delta), sigma) <= delta


def test_analytic_epsilon_values():
    assert m.analytic_epsilon(4.0, 1e-5) == pytest.approx(0.92634150, rel=1e-8)
    assert m.analytic_epsilon(4.0, 1e-5) == pytest.approx(dpa_gaussian.get_epsilon_gaussian(4.0, 1e-5), rel=1e-10)
    # δ above the total variation distance 2Φ(1/(2σ)) − 1: ε = 0.
    assert m.analytic_epsilon(100.0, 0.01) == 0.0


@pytest.mark.parametrize("eps", [0.1, 0.5, 0.9])
def test_classic_wastes_noise_against_analytic(eps):
    waste = m.classic_noise_multiplier(eps, 1e-5) / m.analytic_noise_multiplier(eps, 1e-5)
    assert waste == pytest.approx(m.classic_noise_multiplier(eps, 1e-5) / dpa_gaussian.get_sigma_gaussian(eps, 1e-5))
    assert 1.3 < waste < 1.6  # the classic bound adds 30-60 % more noise than needed at δ = 1e-5


# --- privacy loss random variable --------------------------------------------------------------

def test_privacy_loss_samples_match_theory_and_delta():
    sigma = 1.5
    mu = 1 / sigma
    losses = m.sample_privacy_loss(np.random.default_rng(0), sigma, 400_000)
    assert losses.mean() == pytest.approx(mu**2 / 2, abs=4 * mu / math.sqrt(losses.size))
    assert losses.var() == pytest.approx(mu**2, rel=0.01)
    for eps in (0.1, 0.5, 1.0):
        mc = np.mean(np.maximum(0.0, 1 - np.exp(eps - losses)))
        assert mc == pytest.approx(m.analytic_delta(eps, sigma), rel=0.02)


def test_privacy_loss_pdf():
    grid = np.linspace(-20, 20, 40_001)
    pdf = m.privacy_loss_pdf(grid, 0.5)
    assert np.trapezoid(pdf, grid) == pytest.approx(1.0, abs=1e-9)
    assert np.trapezoid(grid * pdf, grid) == pytest.approx(2.0, abs=1e-9)  # μ²/2 with μ = 2
    assert m.privacy_loss_pdf(2.0, 0.5) == pytest.approx(stats.norm.pdf(0.0, scale=2.0))


# --- hypothesis-testing view -------------------------------------------------------------------

def test_gaussian_tradeoff_curve_values():
    assert m.gaussian_tradeoff_curve(0.05, 1.0) == pytest.approx(stats.norm.cdf(stats.norm.ppf(0.95) - 1), rel=1e-12)
    assert m.gaussian_tradeoff_curve(0.05, 1.0) == pytest.approx(0.740489, abs=1e-6)
    assert m.gaussian_tradeoff_curve(0.0, 2.0) == 1.0 and m.gaussian_tradeoff_curve(1.0, 2.0) == 0.0


@pytest.mark.parametrize("sigma,eps", [(0.7, 0.25), (0.7, 1.0), (0.7, 3.0), (2.0, 0.25), (2.0, 1.0)])
def test_gaussian_curve_respects_its_epsilon_delta_bound(sigma, eps):
    alpha = np.linspace(0, 1, 2001)
    delta = m.analytic_delta(eps, sigma)
    beta = m.gaussian_tradeoff_curve(alpha, sigma)
    bound = m.epsilon_delta_tradeoff_curve(alpha, eps, delta)
    assert np.all(beta >= bound - 1e-12)
    assert np.min(beta - bound) < 1e-3  # exact δ(ε): the line α + e^ε β = 1 − δ touches the curve
    # With a smaller δ the bound is violated somewhere: the mechanism is not (ε, δ/2)-DP.
    assert np.any(beta < m.epsilon_delta_tradeoff_curve(alpha, eps, delta / 2) - 1e-9)


def test_epsilon_delta_tradeoff_curve_formula():
    assert m.epsilon_delta_tradeoff_curve(0.1, 1.0, 0.01) == pytest.approx(1 - 0.01 - math.e * 0.1)
    assert m.epsilon_delta_tradeoff_curve(0.9, 1.0, 0.01) == pytest.approx(math.exp(-1) * (1 - 0.01 - 0.9))
    assert m.epsilon_delta_tradeoff_curve(1.0, 1.0, 0.01) == 0.0


# --- the mechanism -----------------------------------------------------------------------------

def test_gaussian_mechanism_noise_scale_and_shape():
    rng = np.random.default_rng(1)
    out = m.gaussian_mechanism(rng, np.zeros(200_000), l2_sensitivity=2.0, noise_multiplier=1.5)
    assert out.shape == (200_000,)
    assert out.std() == pytest.approx(3.0, rel=0.01)
    assert isinstance(m.gaussian_mechanism(rng, 10.0, 1.0, 1.0), float)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: m.gaussian_mechanism(np.random.default_rng(0), 1.0, 0.0, 1.0), "l2_sensitivity"),
        (lambda: m.gaussian_mechanism(np.random.default_rng(0), 1.0, 1.0, -1.0), "noise_multiplier"),
        (lambda: m.classic_noise_multiplier(0.0, 1e-5), "epsilon"),
        (lambda: m.classic_noise_multiplier(0.5, 1.0), "delta"),
        (lambda: m.classic_epsilon(0.0, 1e-5), "noise_multiplier"),
        (lambda: m.classic_epsilon(1.0, 0.0), "delta"),
        (lambda: m.analytic_delta(-0.1, 1.0), "epsilon"),
        (lambda: m.analytic_delta([0.1, float("nan")], 1.0), "epsilon"),
        (lambda: m.analytic_delta(1.0, 0.0), "noise_multiplier"),
        (lambda: m.analytic_noise_multiplier(-1.0, 1e-5), "epsilon"),
        (lambda: m.analytic_noise_multiplier(1.0, 1.5), "delta"),
        (lambda: m.analytic_epsilon(float("inf"), 1e-5), "noise_multiplier"),
        (lambda: m.analytic_epsilon(1.0, -1e-5), "delta"),
        (lambda: m.privacy_loss_pdf(0.0, 0.0), "noise_multiplier"),
        (lambda: m.sample_privacy_loss(np.random.default_rng(0), 1.0, 0), "size"),
        (lambda: m.gaussian_tradeoff_curve(1.5, 1.0), "alpha"),
        (lambda: m.gaussian_tradeoff_curve(0.5, "x"), "noise_multiplier"),
        (lambda: m.epsilon_delta_tradeoff_curve(-0.1, 1.0, 1e-5), "alpha"),
        (lambda: m.epsilon_delta_tradeoff_curve(0.1, 1.0, 0.0), "delta"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()
