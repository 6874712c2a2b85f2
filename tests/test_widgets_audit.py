"""Notebook 06's widget (dpedu.widgets.audit): the simulated canary scores, the bounds it draws,
its layout, headless use and redraw time."""

from __future__ import annotations

import math
import statistics
import time

import matplotlib
import numpy as np
import pytest
from scipy import stats

matplotlib.use("Agg")

from dpedu import accounting, auditing, mechanisms  # noqa: E402
from dpedu.widgets import audit as audit_widget  # noqa: E402

DELTA = 1e-5


@pytest.mark.parametrize("sigma, q, steps", [(2.0, 1.0, 3), (1.5, 0.1, 50), (0.8, 0.01, 400)])
def test_simulated_scores_have_the_exact_means_and_variances(sigma, q, steps):
    trials = 100_000
    in_scores, out_scores = audit_widget.simulate_canary_scores(sigma, q, steps, trials, seed=1)
    assert in_scores.shape == out_scores.shape == (trials,)
    # in = Binomial(T, q) + N(0, Tσ²), out = N(0, Tσ²): means Tq and 0, variances Tq(1 − q) + Tσ² and Tσ².
    noise_var = steps * sigma ** 2
    for scores, mean, var in ((in_scores, steps * q, steps * q * (1 - q) + noise_var), (out_scores, 0.0, noise_var)):
        assert abs(scores.mean() - mean) < 5 * math.sqrt(var / trials)
        assert scores.var() == pytest.approx(var, rel=0.03)
    assert stats.kstest(out_scores / math.sqrt(noise_var), "norm").pvalue > 1e-3
    if q == 1.0:  # full batch: exactly the Gaussian mechanism N(T, Tσ²)
        assert stats.kstest((in_scores - steps) / math.sqrt(noise_var), "norm").pvalue > 1e-3
    again = audit_widget.simulate_canary_scores(sigma, q, steps, trials, seed=1)
    np.testing.assert_array_equal(again[0], in_scores)


def test_simulation_rejects_bad_arguments():
    for args in ((0.0, 1.0, 1, 10), (1.0, 0.0, 1, 10), (1.0, 1.5, 1, 10), (1.0, 1.0, 0, 10), (1.0, 1.0, 1, 0)):
        with pytest.raises(ValueError):
            audit_widget.simulate_canary_scores(*args)


@pytest.mark.parametrize("target", [1.0, 4.0])
def test_gdp_bound_is_tight_at_full_batch_and_never_above_the_accountant(target):
    steps = 10
    sigma = math.sqrt(steps) * mechanisms.analytic_noise_multiplier(target, DELTA)
    eps = accounting.epsilon(sigma, 1.0, steps, DELTA)
    assert eps == pytest.approx(target, rel=0.01)
    for seed in range(3):
        in_scores, out_scores = audit_widget.simulate_canary_scores(sigma, 1.0, steps, 50_000, seed=seed)
        bound = auditing.audit(in_scores, out_scores, delta=DELTA, seed=seed)
        assert 0.7 * eps <= bound.epsilon_gdp <= eps, (seed, bound)
        assert bound.epsilon <= bound.epsilon_gdp  # the assumption-free bound needs far more trials


def test_audit_figure_returns_consistent_numbers_and_draws():
    from matplotlib.figure import Figure

    full = audit_widget.audit_figure(3.0, 1.0, 10, 5_000, delta=DELTA, seed=2)
    in_scores, out_scores = audit_widget.simulate_canary_scores(3.0, 1.0, 10, 5_000, seed=2)
    bound = auditing.audit(in_scores, out_scores, delta=DELTA, seed=2)
    assert full["epsilon_accountant"] == pytest.approx(accounting.epsilon(3.0, 1.0, 10, DELTA))
    assert full["epsilon_audit"] == bound.epsilon and full["epsilon_gdp"] == bound.epsilon_gdp
    assert full["mu"] == pytest.approx(math.sqrt(10) / 3.0) and full["gdp_valid"]
    assert 0 < full["epsilon_audit"] <= full["epsilon_gdp"] <= full["epsilon_accountant"]
    assert isinstance(full["figure"], Figure) and len(full["figure"].axes) == 2

    fig = Figure()
    sub = audit_widget.audit_figure(2.0, 0.1, 100, 5_000, delta=DELTA, fig=fig)
    assert sub["figure"] is fig and len(fig.axes) == 2
    assert not sub["gdp_valid"] and sub["epsilon_gdp"] is None and sub["mu_gdp"] is None
    assert 0 <= sub["epsilon_audit"] <= sub["epsilon_accountant"]
    bars = fig.axes[1]
    assert len(bars.patches) == 2  # accountant and assumption-free: no GDP bar
    assert any("not valid" in t.get_text() for t in bars.texts)
    text = audit_widget.summary(sub)
    assert "no GDP bound" in text and "add/remove-one" in text
    assert "μ ≥" in audit_widget.summary(full)
    fig.canvas.draw()  # renders without error


def test_show_works_headless(capsys):
    plot = audit_widget.show(trials=2_000)
    out = capsys.readouterr().out
    assert "accountant ε" in out and plot.numbers["trials"] == 2_000
    assert plot.png().startswith(b"\x89PNG")


def test_build_has_its_controls():
    widgets = pytest.importorskip("ipywidgets")
    box = audit_widget.build()
    controls = [c for row in box.children[:2] for c in row.children]
    assert [c.description for c in controls] == ["σ", "q", "T", "trials"]
    assert all(not c.continuous_update for c in controls)
    sigma, q, steps, trials = controls
    assert sigma.min == pytest.approx(math.log10(0.5)) and sigma.max == pytest.approx(math.log10(20))
    assert q.value == 1.0 and 10 ** q.min == pytest.approx(0.01)
    assert steps.options[0] == 1 and steps.options[-1] == 1000
    assert trials.options[0] == 1_000 and trials.options[-1] == 100_000
    assert isinstance(box.children[2], widgets.Output)


def test_redraw_takes_at_most_0_3_s_of_cpu():
    moves = [(3.0, 1.0, 10), (2.0, 1.0, 10), (3.0, 0.1, 100), (5.0, 0.5, 30), (1.0, 0.01, 1000)]
    for sigma, q, steps in moves:  # the accountant is cached per point; time the redraw itself
        audit_widget.accountant_epsilon(sigma, q, steps, DELTA)
    plot = audit_widget.Plot()
    cpu = []
    for sigma, q, steps in moves:
        start = time.process_time()
        plot.draw(sigma, q, steps, 10_000, DELTA)
        assert plot.png().startswith(b"\x89PNG")
        cpu.append(time.process_time() - start)
    assert statistics.median(cpu) <= 0.3, cpu
