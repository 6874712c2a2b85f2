"""Notebooks 04 and 05's widgets (dpedu.widgets.ladder, dpedu.widgets.attack): what they compute,
their layout and their redraw time (at most 0.3 s of CPU per slider move)."""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pytest

from dpedu import accounting, attacks, ladder, mechanisms
from dpedu.widgets import attack as attack_widget
from dpedu.widgets import ladder as ladder_widget


def test_batch_size_table_matches_the_library_calibration():
    table = ladder_widget.batch_size_table(50_000, 204.8, 8.0, 1e-5)
    b = table["batch_size"]
    assert b[-1] == 50_000 and np.all(np.diff(b) > 0) and 4096 in b
    i = int(np.flatnonzero(b == 4096)[0])
    assert table["steps"][i] == 2500
    sigma = accounting.calibrate_noise_multiplier(8.0, 4096 / 50_000, 2500, 1e-5, "rdp")
    assert table["sigma"][i] == pytest.approx(sigma, rel=1e-9)
    assert table["ratio"][i] == pytest.approx(sigma / 4096, rel=1e-9)
    assert np.all(np.diff(table["sigma"]) > 0) and np.all(np.diff(table["ratio"][:-1]) < 0)
    np.testing.assert_allclose(table["ratio"], ladder.noise_to_signal(b, num_examples=50_000, epochs=204.8)[1])
    text = ladder_widget.summary(table, 4096, 50_000, 204.8, 8.0, 1e-5)
    assert "T = 2,500" in text and "add/remove-one" in text


def test_attack_bounds_match_the_library():
    sigma, steps = 3.17, 40
    ratio = sigma / math.sqrt(steps)
    (gauss,), (eps_delta,) = attack_widget.bounds([ratio], 10, 1e-5)
    assert gauss == pytest.approx(attacks.gaussian_success_bound(sigma, steps, 10), rel=1e-9)
    assert eps_delta == pytest.approx(attacks.dp_success_bound(mechanisms.analytic_epsilon(ratio, 1e-5), 1e-5, 10))
    g, e = attack_widget.bounds(attack_widget.NOISE_GRID, 10, 1e-5)
    assert np.all(g <= e + 1e-12) and np.all(np.diff(g) <= 1e-12)  # tighter, and falls with noise
    assert g[-1] == pytest.approx(0.1, abs=0.01)  # much noise: chance


def test_builds_have_their_controls():
    widgets = pytest.importorskip("ipywidgets")
    box = ladder_widget.build()
    controls = box.children[0].children
    assert [c.description for c in controls] == ["B", "ε"]
    assert controls[0].value == 4096 and not controls[0].continuous_update
    assert isinstance(box.children[1], widgets.Output)
    box = attack_widget.build()
    controls = box.children[0].children
    assert [c.description for c in controls] == ["m", "σ/√T"]
    assert all(not c.continuous_update for c in controls)


def _median_cpu(draws):
    cpu = []
    for draw in draws:
        start = time.process_time()
        assert draw().startswith(b"\x89PNG")
        cpu.append(time.process_time() - start)
    return statistics.median(cpu), max(cpu)


def test_redraws_take_at_most_0_3_s_of_cpu():
    for eps in ladder_widget.EPSILONS:  # what build() computes before showing anything
        ladder_widget.batch_size_table(50_000, 204.8, eps, 1e-5)
    plot = ladder_widget.Plot()

    def ladder_move(b, eps):
        def draw():
            table = ladder_widget.batch_size_table(50_000, 204.8, eps, 1e-5)
            plot.draw(table, b, 50_000, 204.8, eps, 1e-5)
            return plot.png()
        return draw

    median, worst = _median_cpu([ladder_move(b, e) for b, e in ((64, 8.0), (512, 8.0), (4096, 1.0), (16384, 2.0),
                                                                 (181, 4.0), (50_000, 8.0))])
    assert median <= 0.3 and worst <= 0.6, (median, worst)

    from dpedu.experiments import attack as experiment

    plot = attack_widget.Plot(experiment.load_results("full"))

    def attack_move(m, s):
        def draw():
            plot.draw(m, s, 1e-5)
            return plot.png()
        return draw

    median, worst = _median_cpu([attack_move(m, s) for m, s in ((10, 0.5), (100, 1.0), (2, 0.05), (1000, 20.0),
                                                                 (10, 3.7), (50, 0.2))])
    assert median <= 0.3 and worst <= 0.6, (median, worst)
