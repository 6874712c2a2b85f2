"""Notebook 02's widget (dpedu.widgets.composition): what it computes, its layout, its redraw time."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from dpedu import accounting
from dpedu.widgets import composition


def test_curves_cover_every_accountant_and_end_at_the_accountants_epsilon():
    curves = composition.epsilon_curves(4.0, 0.01, 10_000, 1e-5)
    assert set(curves) == set(accounting.ACCOUNTANTS)
    for name, (grid, eps, total_delta) in curves.items():
        assert grid[-1] == 10_000 and np.all(np.diff(eps) >= -1e-12), name
    # The exact accountants at T agree with the library's ε (PLD is on a coarser, still pessimistic grid).
    assert np.isclose(curves["rdp"][1][-1], accounting.epsilon(4.0, 0.01, 10_000, 1e-5, "rdp"), rtol=1e-6)
    assert curves["pld"][1][-1] >= accounting.epsilon(4.0, 0.01, 10_000, 1e-5, "pld")


def test_summary_prints_epsilon_per_accountant_with_the_relation_and_falls_with_sigma():
    texts = {}
    for sigma in (4.0, 10.0):
        curves = composition.epsilon_curves(sigma, 0.01, 10_000, 1e-5)
        texts[sigma] = composition.summary(curves, 0.01, 10_000, 1e-5, 1.0)
    assert "add/remove-one" in texts[4.0] and all(label in texts[4.0] for label in composition.LABELS.values())
    first = [float(t.split("ε =")[1].split()[0]) for t in (texts[4.0], texts[10.0])]
    assert first[1] < first[0]  # what the browser test checks after moving σ to its maximum


def test_build_has_the_sliders_the_browser_test_moves():
    widgets = pytest.importorskip("ipywidgets")
    box = composition.build()
    sliders = [w for row in box.children[:2] for w in row.children]
    descriptions = [w.description for w in sliders]
    assert descriptions == ["σ", "q", "T", "δ", "target ε"]
    sigma = sliders[0]
    assert isinstance(sigma, widgets.FloatSlider) and sigma.value == 4.0 and not sigma.continuous_update
    assert isinstance(box.children[2], widgets.Output)


def test_redraw_takes_at_most_0_3_s_of_cpu():
    """Seven slider moves to values not computed before, through the widget's own drawing and
    PNG rendering (CPU time: the redraw is single-threaded; wall time on shared cores also counts
    other processes)."""
    plot = composition.Plot()
    state = dict(composition.DEFAULTS)
    moves = [dict(sigma=3.7), dict(sampling_rate=0.02), dict(steps=31_623), dict(delta=1e-6),
             dict(target_epsilon=2.0), dict(sigma=6.1), dict(sampling_rate=0.005)]
    cpu = []
    for move in moves:
        state.update(move)
        start = time.process_time()
        curves = composition.epsilon_curves(state["sigma"], state["sampling_rate"], state["steps"], state["delta"])
        plot.draw(curves, **state)
        assert plot.png().startswith(b"\x89PNG")
        composition.summary(curves, state["sampling_rate"], state["steps"], state["delta"], state["target_epsilon"])
        cpu.append(time.process_time() - start)
    print(f"redraw: median {statistics.median(cpu):.3f} s CPU, max {max(cpu):.3f} s")
    assert statistics.median(cpu) <= 0.3, cpu
