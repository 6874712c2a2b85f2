"""dpedu.accounting: composition, amplification, moments accountant, RDP from scratch, PLD.

Acceptance checks: our from-scratch RDP against dp-accounting's RdpAccountant on 30 points of
σ ∈ [0.5, 10], q ∈ [1e-4, 1], T ∈ [1, 1e5]; our PLD path against dp-accounting's PLDAccountant;
the Abadi et al. slide sequence for σ = 4, q = 1 %, T = 10,000, δ = 1e-5.
"""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from dpedu import accounting as acc
from dpedu import mechanisms

DELTA = 1e-5
ABADI = dict(noise_multiplier=4.0, sampling_rate=0.01, steps=10_000, delta=1e-5)

# (σ, q, T): every decade of q and T, σ from 0.5 to 10, q = 1 and T = 1 edges included.
GRID = [
    (0.5, 1.0, 1), (0.5, 0.01, 1000), (0.5, 1e-4, 100_000), (0.6, 0.1, 10), (0.7, 0.001, 10_000),
    (0.8, 1.0, 10), (0.8, 0.05, 100), (0.9, 0.3, 300), (1.0, 0.01, 10_000), (1.0, 0.2, 1),
    (1.0, 1e-4, 100_000), (1.1, 0.004, 60_000), (1.3, 0.5, 100), (1.5, 0.02, 3000), (2.0, 1.0, 1000),
    (2.0, 0.001, 100_000), (2.0, 0.1, 500), (3.0, 0.03, 20_000), (3.0, 0.001, 100), (4.0, 0.01, 10_000),
    (4.0, 0.3, 50), (4.0, 1e-4, 1), (5.0, 0.1, 100_000), (6.0, 0.001, 30_000), (7.0, 0.5, 2000),
    (8.0, 1.0, 100_000), (8.0, 0.01, 1), (10.0, 1.0, 1), (10.0, 0.02, 100_000), (10.0, 1e-4, 1000),
]
# PLD at 1e-4 costs up to several seconds for large ε: the identity check uses the cheap points
# of the grid (still T up to 1e5, q from 1e-4 to 1).
PLD_GRID = [(1.0, 1e-4, 100_000), (2.0, 0.001, 100_000), (3.0, 0.03, 20_000), (4.0, 0.01, 10_000),
            (4.0, 1e-4, 1), (6.0, 0.001, 30_000), (10.0, 1.0, 1), (10.0, 1e-4, 1000)]


def dpa_event(sigma, q, steps):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)


def dpa_rdp_epsilon(sigma, q, steps, delta=DELTA):
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dpa_event(sigma, q, steps))
    return accountant.get_epsilon(delta)


def dpa_pld_epsilon(sigma, q, steps, delta=DELTA):
    accountant = pld_privacy_accountant.PLDAccountant()
    accountant.compose(dpa_event(sigma, q, steps))
    return accountant.get_epsilon(delta)


# --- acceptance: RDP from scratch and PLD against dp-accounting ---------------------------------

def test_rdp_orders_are_dp_accountings():
    assert acc.RDP_ORDERS == tuple(rdp_privacy_accountant.DEFAULT_RDP_ORDERS)


@pytest.mark.parametrize("sigma,q,steps", GRID)
def test_rdp_from_scratch_within_half_percent_of_dp_accounting(sigma, q, steps):
    ours = acc.epsilon(sigma, q, steps, DELTA, accountant="rdp")
    reference = dpa_rdp_epsilon(sigma, q, steps)
    assert ours == pytest.approx(reference, rel=5e-3)  # acceptance bound
    assert ours == pytest.approx(reference, rel=1e-9)  # what we actually achieve: same algorithm


@pytest.mark.parametrize("sigma,q", [(4.0, 0.01), (0.5, 1e-4), (1.0, 0.256), (0.7, 0.9)])
def test_per_order_rdp_matches_dp_accounting(sigma, q):
    ours = acc.rdp_poisson_gaussian(sigma, q)
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dpa_event(sigma, q, 1))
    reference = accountant._rdp  # per-order values: no public getter
    finite = np.isfinite(reference)
    np.testing.assert_array_equal(np.isfinite(ours), finite)  # same orders dropped (non-convergent)
    np.testing.assert_allclose(ours[finite], reference[finite], rtol=1e-8)


@pytest.mark.parametrize("sigma,q,steps", PLD_GRID)
def test_pld_is_dp_accountings(sigma, q, steps):
    assert acc.epsilon(sigma, q, steps, DELTA, accountant="pld") == dpa_pld_epsilon(sigma, q, steps)


# --- Abadi et al. slides: σ = 4, q = 0.01, T = 10,000, δ = 1e-5 ----------------------------------

def test_abadi_per_step_and_naive():
    with pytest.warns(UserWarning):  # ε₀ ≈ 1.21 is outside the classic theorem's ε < 1
        eps0 = mechanisms.classic_epsilon(4.0, 1e-5)
    assert round(eps0, 1) == 1.2  # slides: (1.2, 1e-5)
    eps, delta = acc.naive_composition(eps0, 1e-5, 10_000)
    assert eps == pytest.approx(12_112.013, rel=1e-6) and round(eps, -3) == 12_000  # slides: (12,000, .1)
    assert delta == pytest.approx(0.1)


def test_abadi_amplification_plus_strong():
    with pytest.warns(UserWarning):
        eps0 = mechanisms.classic_epsilon(4.0, 1e-5)
    eps1, delta1 = acc.amplify_by_poisson_sampling(eps0, 1e-5, 0.01)
    assert eps1 == pytest.approx(0.0233016, rel=1e-5) and delta1 == pytest.approx(1e-7)
    simplified, total_delta = acc.strong_composition_simplified(eps1, delta1, 10_000, 1e-5)
    exact, exact_delta = acc.strong_composition(eps1, delta1, 10_000, 1e-5)
    assert simplified == pytest.approx(7.9064, rel=1e-4)
    # The theorem's first term alone, √(2T ln 1/δ') ε₁, rounds to the slides' "10".
    assert math.sqrt(2 * 10_000 * math.log(1e5)) * eps1 == pytest.approx(11.181, rel=1e-4)
    assert exact == pytest.approx(16.6747, rel=1e-4)
    assert total_delta == exact_delta == pytest.approx(1.01e-3) and round(total_delta, 3) == 0.001  # slides: .001


def test_abadi_accountants():
    values = {name: acc.epsilon_and_delta(**ABADI, accountant=name) for name in acc.ACCOUNTANTS}
    # naive/strong with the exact per-step ε₀ = 0.9263 (analytic Gaussian) instead of the classic 1.21.
    assert values["naive"] == pytest.approx((9263.415, 0.1), rel=1e-6)
    assert values["strong"] == pytest.approx((9.57255, 1.01e-3), rel=1e-5)
    assert values["moments"] == pytest.approx((1.25857, 1e-5), rel=1e-5)  # slides 1.25, paper 1.26
    assert values["rdp"] == pytest.approx((1.03549, 1e-5), rel=1e-5)
    assert values["pld"] == pytest.approx((0.94700, 1e-5), rel=1e-5)
    eps = [values[name][0] for name in acc.ACCOUNTANTS]
    assert eps == sorted(eps, reverse=True)  # each accountant tighter than the previous


# --- pieces ----------------------------------------------------------------------------------------

def test_naive_and_strong_formulas():
    assert acc.naive_composition(0.5, 1e-6, 100) == pytest.approx((50.0, 1e-4))
    assert acc.naive_composition(0.5, 0.01, 200)[1] == 1.0  # vacuous, capped
    eps, delta = acc.strong_composition(0.1, 1e-6, 100, 1e-5)
    assert eps == pytest.approx(math.sqrt(200 * math.log(1e5)) * 0.1 + 100 * 0.1 * math.expm1(0.1))
    assert delta == pytest.approx(100 * 1e-6 + 1e-5)
    assert acc.strong_composition_simplified(0.1, 1e-6, 100, 1e-5)[0] < eps


def test_amplification():
    assert acc.amplify_by_poisson_sampling(1.0, 1e-5, 1.0) == pytest.approx((1.0, 1e-5))
    assert acc.amplify_by_poisson_sampling(0.0, 1e-5, 0.1) == pytest.approx((0.0, 1e-6))  # (0, δ)-DP is valid
    eps, delta = acc.amplify_by_poisson_sampling(2.0, 1e-5, 0.1)
    assert eps == pytest.approx(math.log(1 + 0.1 * (math.e**2 - 1))) and delta == pytest.approx(1e-6)


def test_moments_accountant_is_integer_order_rdp_with_basic_conversion():
    sigma, q, steps = 1.1, 0.01, 5000
    log_moments = acc.moments_log_moments(sigma, q)
    assert log_moments.shape == (32,)
    lambdas = np.arange(1, 33)
    rdp = acc.rdp_poisson_gaussian(sigma, q, orders=lambdas + 1)
    np.testing.assert_allclose(log_moments, lambdas * rdp, rtol=1e-12)
    expected = np.min(steps * rdp + math.log(1 / DELTA) / lambdas)
    assert acc.moments_epsilon(sigma, q, steps, DELTA) == pytest.approx(expected, rel=1e-12)
    # q = 1: α(λ) = λ(λ+1)/(2σ²) in closed form.
    np.testing.assert_allclose(acc.moments_log_moments(2.0, 1.0), lambdas * (lambdas + 1) / 8, rtol=1e-12)


def test_full_batch_gaussian_against_exact_calibration():
    # q = 1, T steps of σ = one Gaussian of σ/√T: PLD ≈ the exact ε, RDP and moments above it.
    exact = mechanisms.analytic_epsilon(3.0 / math.sqrt(10), DELTA)
    assert acc.epsilon(3.0, 1.0, 10, DELTA, "pld") == pytest.approx(exact, rel=2e-3)
    assert acc.epsilon(3.0, 1.0, 10, DELTA, "pld") >= exact
    assert acc.epsilon(3.0, 1.0, 10, DELTA, "rdp") > exact
    assert acc.epsilon(3.0, 1.0, 10, DELTA, "moments") > exact


def test_rdp_to_epsilon_vectorised_and_kl_shortcut():
    rdp = acc.rdp_poisson_gaussian(2.0, 0.05)
    steps = np.array([[1.0], [100.0], [10_000.0]])
    eps = acc.rdp_to_epsilon(acc.RDP_ORDERS, steps * rdp, DELTA)
    assert eps.shape == (3,) and np.all(np.diff(eps) > 0)
    assert eps[1] == pytest.approx(acc.epsilon(2.0, 0.05, 100, DELTA, "rdp"), rel=1e-12)
    assert acc.rdp_to_epsilon([2.0, 3.0], [1e-12, 2e-12], 1e-5) == 0.0  # sqrt(1 - e^-KL) < δ


# --- calibration --------------------------------------------------------------------------------

@pytest.mark.parametrize("accountant,q,steps", [
    ("naive", 0.01, 1000), ("strong", 0.01, 1000), ("moments", 0.01, 10_000),
    ("rdp", 0.01, 10_000), ("rdp", 1.0, 1), ("pld", 0.01, 10_000),
])
def test_calibration_is_tight_to_one_percent(accountant, q, steps):
    target = 1.0  # σ ≈ 4 for the tight accountants: PLD evaluations stay cheap
    sigma = acc.calibrate_noise_multiplier(target, q, steps, DELTA, accountant)
    assert acc.epsilon(sigma, q, steps, DELTA, accountant) <= target
    assert acc.epsilon(0.99 * sigma, q, steps, DELTA, accountant) > target


def test_calibration_reaches_per_step_epsilon_zero():
    # A huge σ makes the per-step Gaussian (0, δ)-DP (total variation ≤ δ): naive/strong must cope.
    assert mechanisms.analytic_epsilon(1e6, DELTA) == 0.0
    assert acc.epsilon_and_delta(1e6, 0.01, 1000, DELTA, "strong")[0] == 0.0
    sigma = acc.calibrate_noise_multiplier(1e-3, 0.01, 1000, DELTA, "naive")
    assert acc.epsilon(sigma, 0.01, 1000, DELTA, "naive") <= 1e-3 < acc.epsilon(0.99 * sigma, 0.01, 1000, DELTA, "naive")


def test_calibration_abadi_values():
    sigma = acc.calibrate_noise_multiplier(1.0352, 0.01, 10_000, DELTA, "rdp")
    assert 4.0 < sigma < 4.0 * 1.011  # σ = 4 gives ε = 1.03549 > 1.0352: a bit more than 4, within 1 %


def test_calibration_unreachable_target():
    with pytest.raises(ValueError, match="target_epsilon"):
        acc.calibrate_noise_multiplier(1e9, 1.0, 1, DELTA, "rdp")  # even σ < 1e-3 would meet it



def _composed_with_gaussian(sigma, q=0.01, steps=1000):
    # DP-SGD after one extra Gaussian mechanism (σ = 20), as the DP-PCA pipeline composes them.
    return dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(20.0), acc.dp_event(sigma, q, steps)])


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_event_calibration_is_tight_to_one_percent(accountant):
    sigma = acc.calibrate_noise_multiplier_for_event(_composed_with_gaussian, 1.0, DELTA, accountant)
    assert acc.epsilon_for_event(_composed_with_gaussian(sigma), DELTA, accountant) <= 1.0
    assert acc.epsilon_for_event(_composed_with_gaussian(0.99 * sigma), DELTA, accountant) > 1.0


def test_event_calibration_of_plain_dp_sgd_matches_calibrate_noise_multiplier():
    plain = acc.calibrate_noise_multiplier(1.0, 0.01, 1000, DELTA, "pld")
    sigma = acc.calibrate_noise_multiplier_for_event(lambda s: acc.dp_event(s, 0.01, 1000), 1.0, DELTA, "pld")
    assert sigma == pytest.approx(plain, rel=0.011)  # both within 1 % of the smallest σ


def test_event_calibration_from_a_lower_bound():
    plain = acc.calibrate_noise_multiplier_for_event(lambda s: acc.dp_event(s, 0.01, 1000), 1.0, DELTA, "rdp")
    # Composing another mechanism only adds noise needed: the plain σ is a valid starting bound ...
    composed = acc.calibrate_noise_multiplier_for_event(_composed_with_gaussian, 1.0, DELTA, "rdp", lower_bound=plain)
    assert composed > plain
    assert acc.epsilon_for_event(_composed_with_gaussian(composed), DELTA, "rdp") <= 1.0
    # ... and when the bound already meets the target it is the answer (no search below it).
    assert acc.calibrate_noise_multiplier_for_event(lambda s: acc.dp_event(s, 0.01, 1000), 1.0, DELTA, "rdp",
                                                    lower_bound=plain) == plain


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_epsilon=0.0), "target_epsilon"),
    (dict(delta=1.0), "delta"),
    (dict(accountant="moments"), "accountant"),
    (dict(lower_bound=-1.0), "noise_multiplier"),
    (dict(target_epsilon=1e-9), "target_epsilon"),  # no σ ≤ 1e8 reaches it
])
def test_event_calibration_rejects_bad_input(kwargs, match):
    args = dict(target_epsilon=1.0, delta=DELTA, accountant="rdp")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        acc.calibrate_noise_multiplier_for_event(_composed_with_gaussian, **args)

# --- events: Poisson and shuffle ---------------------------------------------------------------

def test_dp_event_poisson_structure():
    event = acc.dp_event(2.0, 0.01, 500)
    assert event == dpa_event(2.0, 0.01, 500)
    assert acc.epsilon_for_event(event, DELTA, "pld") == acc.epsilon(2.0, 0.01, 500, DELTA, "pld")
    assert acc.epsilon_for_event(event, DELTA, "rdp") == pytest.approx(acc.epsilon(2.0, 0.01, 500, DELTA, "rdp"))


def test_dp_event_shuffle_counts_epochs_without_amplification():
    # 60,000 examples, batches of 256: 234 full batches per epoch; 2340 steps = 10 epochs.
    event = acc.dp_event(1.1, 256 / 60_000, 2340, sampler="shuffle", num_examples=60_000)
    assert event == dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.1), 10)
    assert acc.dp_event(1.1, 256 / 60_000, 2341, sampler="shuffle", num_examples=60_000).count == 11
    assert acc.dp_event(1.1, 0.01, 1000, sampler="shuffle").count == 10
    # One epoch of a shuffled run is one full Gaussian: the exact ε of σ (PLD is tight to 0.2 %).
    one_epoch = acc.epsilon_for_event(acc.dp_event(2.0, 0.01, 100, sampler="shuffle"), DELTA, "pld")
    assert one_epoch == pytest.approx(mechanisms.analytic_epsilon(2.0, DELTA), rel=2e-3)
    # Without amplification the shuffled run costs far more than Poisson sampling would claim.
    shuffled = acc.epsilon_for_event(acc.dp_event(2.0, 0.01, 1000, sampler="shuffle"), DELTA, "rdp")
    assert shuffled > 5 * acc.epsilon(2.0, 0.01, 1000, DELTA, "rdp")


# --- the fast curve for the widget ---------------------------------------------------------------

def test_epsilon_curve_grid_and_values():
    steps, eps, total_delta = acc.epsilon_curve(4.0, 0.01, 10_000, DELTA, "rdp")
    assert list(steps) == [1, 2, 4, 9, 19, 39, 78, 156, 312, 625, 1250, 2500, 5000, 10_000]
    assert eps[-1] == acc.epsilon(4.0, 0.01, 10_000, DELTA, "rdp") and np.all(np.diff(eps) > 0)
    _, naive, naive_delta = acc.epsilon_curve(4.0, 0.01, 10_000, DELTA, "naive")
    assert naive_delta[-1] == pytest.approx(0.1) and naive[0] == pytest.approx(mechanisms.analytic_epsilon(4.0, DELTA))


@pytest.mark.parametrize("sigma,q,steps", [(4.0, 0.01, 10_000), (1.1, 0.01, 10_000), (2.0, 0.001, 100_000)])
def test_epsilon_curve_pld_is_a_slightly_looser_upper_bound(sigma, q, steps):
    _, coarse, _ = acc.epsilon_curve(sigma, q, steps, DELTA, "pld")
    fine = acc.epsilon(sigma, q, steps, DELTA, "pld")
    assert fine <= coarse[-1] <= 1.05 * fine
    assert coarse[-1] < acc.epsilon(sigma, q, steps, DELTA, "rdp")


# --- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: acc.epsilon(0.0, 0.01, 100, DELTA), "noise_multiplier must be in"),
        (lambda: acc.epsilon(-1.0, 0.01, 100, DELTA), "noise_multiplier must be in"),
        (lambda: acc.epsilon(1.0, 0.0, 100, DELTA), r"sampling_rate must be in \(0, 1\]"),
        (lambda: acc.epsilon(1.0, 1.5, 100, DELTA), r"sampling_rate must be in \(0, 1\]"),
        (lambda: acc.epsilon(1.0, 0.01, 0, DELTA), "steps must be an integer >= 1"),
        (lambda: acc.epsilon(1.0, 0.01, 2.5, DELTA), "steps must be an integer >= 1"),
        (lambda: acc.epsilon(1.0, 0.01, 100, 0.0), r"delta must be in \(0, 1\)"),
        (lambda: acc.epsilon(1.0, 0.01, 100, 1.0), r"delta must be in \(0, 1\)"),
        (lambda: acc.epsilon(1.0, 0.01, 100, DELTA, "gdp"), "accountant must be one of"),
        (lambda: acc.epsilon_and_delta(1.0, 0.01, 100, DELTA, "RDP"), "accountant must be one of"),
        (lambda: acc.calibrate_noise_multiplier(0.0, 0.01, 100, DELTA), "target_epsilon must be in"),
        (lambda: acc.calibrate_noise_multiplier(1.0, 2.0, 100, DELTA), "sampling_rate must be in"),
        (lambda: acc.calibrate_noise_multiplier(1.0, 0.01, 100, DELTA, "x"), "accountant must be one of"),
        (lambda: acc.epsilon_curve(1.0, 0.01, 0, DELTA), "max_steps must be an integer >= 1"),
        (lambda: acc.epsilon_curve(1.0, 0.01, 10, DELTA, "pld", -1.0), "pld_value_discretization must be in"),
        (lambda: acc.dp_event(1.0, 0.01, 100, sampler="uniform"), "sampler must be one of"),
        (lambda: acc.dp_event(1.0, 0.01, 100, sampler="shuffle", num_examples=0), "num_examples must be"),
        (lambda: acc.epsilon_for_event(acc.dp_event(1.0, 0.01, 10), DELTA, "moments"), "accountant must be one of"),
        (lambda: acc.epsilon_for_event("event", DELTA), "event must be a dp_accounting.DpEvent"),
        (lambda: acc.naive_composition(1.0, 1e-5, 0), "steps must be"),
        (lambda: acc.strong_composition(1.0, 1e-5, 10, 0.0), "delta must be in"),
        (lambda: acc.amplify_by_poisson_sampling(-1.0, 1e-5, 0.1), "epsilon must be in"),
        (lambda: acc.moments_epsilon(1.0, 0.01, [10, 0], DELTA), "steps must be"),
        (lambda: acc.rdp_poisson_gaussian(1.0, 0.01, orders=[0.5, 2.0]), "orders must be"),
        (lambda: acc.rdp_to_epsilon([2.0, 3.0], [0.1], DELTA), "rdp must have"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_epsilon_for_event_coarser_pld_grid_is_a_slightly_looser_bound():
    # Notebook 03's widget accounts with a 2e-3 PLD grid for speed (added for it).
    event = acc.dp_event(1.0, 0.01, 300)
    fine = acc.epsilon_for_event(event, DELTA, "pld")
    coarse = acc.epsilon_for_event(event, DELTA, "pld", pld_value_discretization=2e-3)
    assert fine <= coarse <= 1.01 * fine
    with pytest.raises(ValueError, match="pld_value_discretization"):
        acc.epsilon_for_event(event, DELTA, "pld", pld_value_discretization=0.0)
