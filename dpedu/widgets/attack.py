"""Notebook 05's widget: the bounds on reconstruction success over the prior size m and the
noise multiplier σ/√T of the one Gaussian that T full-batch steps compose to.

Both bounds are closed forms (Hayes, Mahloujifar & Balle 2023): the Gaussian one,
``Φ(√T/σ − Φ⁻¹(1 − 1/m))`` (:func:`dpedu.attacks.gaussian_success_bound`), and the (ε, δ) one,
``min(1, e^ε/m + δ)`` (:func:`dpedu.attacks.dp_success_bound`) at the exact ε of that Gaussian
(:func:`dpedu.mechanisms.analytic_epsilon`, cached per δ on a fixed grid). A slider move redraws
one reused figure and renders a PNG in well under 0.3 s (``tests/test_widgets_ladder_attack.py``
measures it). The stored full run's attack success rates are drawn at their σ/√T when m matches.

Taught in notebooks/05_reconstruction_attack.ipynb.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from scipy import stats

__all__ = ["DEFAULTS", "PRIOR_SIZES", "NOISE_GRID", "bounds", "summary", "stored_points", "Plot", "show", "build"]

DEFAULTS = dict(prior_size=10, noise_ratio=0.5, delta=1e-5)
PRIOR_SIZES = (2, 5, 10, 20, 50, 100, 1000)
NOISE_GRID = np.logspace(-1.7, 1.7, 137)  # σ/√T from 0.02 to 50


@functools.lru_cache(maxsize=16)
def _epsilons(delta: float) -> np.ndarray:
    from dpedu.mechanisms import analytic_epsilon

    return np.array([analytic_epsilon(float(s), delta) for s in NOISE_GRID])


def bounds(noise_ratio, prior_size: int, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(gaussian, epsilon_delta)`` success bounds at each ``noise_ratio`` = σ/√T (array)."""
    from dpedu.mechanisms import analytic_epsilon

    s = np.atleast_1d(np.asarray(noise_ratio, dtype=float))
    gaussian = stats.norm.cdf(1.0 / s - stats.norm.ppf(1 - 1 / prior_size))
    if s.shape == NOISE_GRID.shape and np.array_equal(s, NOISE_GRID):
        eps = _epsilons(delta)
    else:
        eps = np.array([analytic_epsilon(float(x), delta) for x in s])
    eps_delta = np.minimum(1.0, np.exp(np.minimum(eps, 700.0)) / prior_size + delta)
    return gaussian, eps_delta


def summary(noise_ratio: float, prior_size: int, delta: float) -> str:
    """The text printed under the plot."""
    from dpedu.mechanisms import analytic_epsilon

    (gauss,), (eps_delta,) = bounds([noise_ratio], prior_size, delta)
    eps = analytic_epsilon(noise_ratio, delta)
    return (f"σ/√T = {noise_ratio:.3g} (μ = √T/σ = {1 / noise_ratio:.3g}; ε = {eps:.3g} at δ = {delta:g}, "
            f"add/remove-one), m = {prior_size}: success ≤ {gauss:.1%} (Gaussian bound), ≤ {eps_delta:.1%} "
            f"((ε, δ) bound); chance {1 / prior_size:.1%}")


def stored_points(record) -> dict:
    """``{attack: (σ/√T, success, ci_low, ci_high)}`` of the stored run's private rows."""
    if record is None:
        return {}
    steps = record["config"]["steps"]
    rows = [r for r in record["by_epsilon"] if r["noise_multiplier"] is not None]
    x = np.array([r["noise_multiplier"] / math.sqrt(steps) for r in rows])
    return {name: (x, *(np.array([r[name][k] if k == "success_rate" else r[name]["success_ci95"][j]
                                  for r in rows]) for k, j in (("success_rate", 0), ("ci", 0), ("ci", 1))))
            for name in ("learned", "prior_aware")}


class Plot:
    """The two bounds against σ/√T on one reused figure, a marker at the chosen σ/√T; :meth:`png` renders it."""

    def __init__(self, record=None):
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullLocator

        self.record = record
        self.points = stored_points(record)
        self.fig, self.ax = plt.subplots(figsize=(9, 3.8), dpi=80)
        plt.close(self.fig)
        ax = self.ax
        self.gauss = ax.plot([], [], "-", color="k", label="Gaussian bound Φ(√T/σ − Φ⁻¹(1 − 1/m))")[0]
        self.eps_delta = ax.plot([], [], "--", color="k", label="(ε, δ) bound e^ε/m + δ")[0]
        self.chance = ax.axhline(0.1, color="grey", lw=1, label="chance 1/m")
        self.vline = ax.axvline(1.0, color="C3", lw=1)
        self.dots = ax.plot([], [], "o", color="C3", ms=7)[0]
        self.stored = {}
        for name, label, color in (("prior_aware", "prior-aware attack (stored run)", "C3"),
                                   ("learned", "learned attack (stored run)", "C0")):
            if name in self.points:
                x, rate, lo, hi = self.points[name]
                self.stored[name] = ax.errorbar(x, rate, yerr=[rate - lo, hi - rate], fmt="s", color=color, ms=5,
                                                capsize=2, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set_xlim(NOISE_GRID[0], NOISE_GRID[-1])
        ax.set_ylim(0, 1.03)
        ax.set_xlabel("σ/√T  (noise multiplier of the one Gaussian the T steps compose to)")
        ax.set_ylabel("success probability")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
        self.fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.9)

    def draw(self, prior_size: int, noise_ratio: float, delta: float) -> None:
        gauss, eps_delta = bounds(NOISE_GRID, prior_size, delta)
        self.gauss.set_data(NOISE_GRID, gauss)
        self.eps_delta.set_data(NOISE_GRID, eps_delta)
        self.chance.set_ydata([1 / prior_size] * 2)
        self.vline.set_xdata([noise_ratio] * 2)
        (g,), (e,) = bounds([noise_ratio], prior_size, delta)
        self.dots.set_data([noise_ratio, noise_ratio], [g, e])
        shown = self.record is not None and prior_size == self.record["config"]["prior_size"]
        for container in self.stored.values():
            for artist in container.get_children():
                artist.set_visible(shown)
        self.ax.set_title(f"m = {prior_size}, δ = {delta:g}: at σ/√T = {noise_ratio:.3g}, success ≤ {g:.0%} "
                          f"(Gaussian), ≤ {e:.0%} ((ε, δ))", fontsize=10)

    def png(self) -> bytes:
        png = io.BytesIO()
        self.fig.savefig(png, format="png")
        return png.getvalue()

    def update(self, prior_size, noise_ratio, delta=DEFAULTS["delta"]) -> None:
        """The widget's callback: redraws, displays the PNG and prints :func:`summary`."""
        from IPython.display import Image, display

        self.draw(prior_size, noise_ratio, delta)
        display(Image(self.png()))
        print(summary(noise_ratio, prior_size, delta))


def show(record=None, **values) -> Plot:
    """The default (static) view: draws once with ``DEFAULTS`` updated by ``values``."""
    plot = Plot(record)
    plot.update(**{**DEFAULTS, **values})
    return plot


def build(record=None, **values):
    """The widget: a prior-size slider and a σ/√T log slider above the plot (δ fixed)."""
    import ipywidgets as widgets

    v = {**DEFAULTS, **values}
    controls = dict(
        prior_size=widgets.SelectionSlider(options=list(PRIOR_SIZES), value=v["prior_size"], description="m",
                                           continuous_update=False),
        noise_ratio=widgets.FloatLogSlider(value=v["noise_ratio"], base=10, min=-1.7, max=1.7, step=0.02,
                                           description="σ/√T", readout_format=".3g", continuous_update=False),
    )
    plot = Plot(record)
    output = widgets.interactive_output(lambda prior_size, noise_ratio: plot.update(prior_size, noise_ratio,
                                                                                    v["delta"]), controls)
    return widgets.VBox([widgets.HBox([controls["prior_size"], controls["noise_ratio"]]), output])
