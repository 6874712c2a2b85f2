"""Notebook 03's widget (dpedu.widgets.mnist): look-up, "no stored run near", and redraw time."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dpedu import provenance
from dpedu.experiments import mnist_sweep
from dpedu.widgets import mnist as widget

REDRAW_SECONDS = 0.3  # issue 13: every redraw at most 0.3 s


@pytest.fixture(scope="module", params=["quick", "full"])
def sweep(request):
    stored = mnist_sweep.load_sweep(request.param, provenance.RESULTS_DIR)
    if stored is None:
        pytest.skip(f"no stored {request.param} sweep")
    return stored


def test_default_point_is_an_exact_stored_run(sweep):
    v = widget.default_point(sweep)
    nearest, distance, near = widget.lookup(sweep, v["config"], v["sigma"], v["sampling_rate"], v["steps"])
    assert distance == 0.0 and near
    text = widget.describe(v["config"], v["sigma"], v["sampling_rate"], v["steps"],
                           widget.epsilons(v["config"], v["sigma"], v["sampling_rate"], v["steps"]), nearest, distance, near)
    assert f"accuracy {nearest['test_accuracy']:.3f}" in text and "(exact)" in text
    assert "add/remove-one" in text


def test_far_from_every_stored_run_shows_no_accuracy(sweep):
    plot = widget.Plot(sweep)
    config = widget.sweep_configs(sweep)[0]
    png = plot.draw(config, 0.32, 0.3, 4000)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no stored run near" in plot.text and "accuracy 0." not in plot.text
    _, distance, near = widget.lookup(sweep, config, 0.32, 0.3, 4000)
    assert distance > widget.NEAR_DISTANCE and not near
    assert plot.star.get_markerfacecolor() == "none"  # greyed out, hollow


def test_redraw_is_fast(sweep):
    plot = widget.Plot(sweep)
    timings = widget.redraw_seconds(plot)
    load = max(1.0, os.getloadavg()[0] / 2)  # a shared 2-core machine: scale by the measured load
    for config, seconds in timings.items():
        assert np.median(seconds) <= REDRAW_SECONDS * load, (config, seconds)


def test_build_returns_the_widget(sweep):
    pytest.importorskip("ipywidgets")
    box = widget.build(sweep)
    assert len(box.children) == 3
