"""Notebook 02's widget: ε against the number of steps T for every accountant.

Pure functions (:func:`epsilon_curves`, :func:`summary`) compute what is shown; :class:`Plot`
draws it on one reused figure (a redraw only updates the curves: creating axes costs more than
computing them) and renders a PNG itself; :func:`build` returns the ipywidgets layout (sliders
for σ, q, T and the target ε, a δ dropdown) wired with ``ipywidgets.interactive_output``.

A redraw takes well under 0.3 s of CPU (``tests/test_widgets_composition.py`` measures it):
RDP and moments compute one step once and scale by T; PLD composes by repeated squaring on a
coarse grid (:func:`dpedu.accounting.epsilon_curve`); the σ each accountant needs for the target
ε is cached.

Taught in notebooks/02_composition_accounting.ipynb.
"""

from __future__ import annotations

import functools
import io
import math

from dpedu import accounting

__all__ = ["LABELS", "DEFAULTS", "epsilon_curves", "noise_for_target", "summary", "Plot", "show", "build"]

LABELS = {
    "naive": "naive composition (δ total = Tδ)",
    "strong": "amplification + strong (δ total = Tqδ + δ)",
    "moments": "moments accountant (Abadi et al.)",
    "rdp": "RDP (ours, from scratch)",
    "pld": "PLD (dp-accounting, coarse grid)",
}

# Abadi et al.'s setting: σ = 4, q = 1 %, T = 10,000, δ = 1e-5; target ε = 1.
DEFAULTS = dict(sigma=4.0, sampling_rate=0.01, steps=10_000, delta=1e-5, target_epsilon=1.0)


def epsilon_curves(sigma: float, sampling_rate: float, steps: int, delta: float) -> dict:
    """``{accountant: (steps grid, ε, total δ)}`` for every accountant (Poisson sampling, add/remove)."""
    return {name: accounting.epsilon_curve(sigma, sampling_rate, int(round(steps)), delta, name)
            for name in accounting.ACCOUNTANTS}


@functools.lru_cache(maxsize=512)
def noise_for_target(target_epsilon: float, sampling_rate: float, steps: int, delta: float, accountant: str) -> float:
    """σ (to 1 %) that ``accountant`` needs for ``target_epsilon`` (cached: sliders revisit values)."""
    return accounting.calibrate_noise_multiplier(target_epsilon, sampling_rate, steps, delta, accountant)


def summary(curves: dict, sampling_rate: float, steps: int, delta: float, target_epsilon: float) -> str:
    """The text printed under the plot: ε and δ at T for each accountant, and the σ it needs for the target."""
    steps = int(round(steps))
    lines = [f"after T = {steps:,} steps (Poisson sampling, add/remove-one neighbours):"]
    for name, (_, eps, total_delta) in curves.items():
        needed = "" if name == "pld" else (
            f"   σ for ε = {target_epsilon:g}: {noise_for_target(target_epsilon, sampling_rate, steps, delta, name):.3g}")
        lines.append(f"  {LABELS[name]:<44} ε = {eps[-1]:10.4g} (δ = {total_delta[-1]:.2g}){needed}")
    return "\n".join(lines)


class Plot:
    """One matplotlib figure of ε against T, redrawn in place; :meth:`png` renders it."""

    def __init__(self):
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullLocator

        self.fig, self.ax = plt.subplots(figsize=(8, 4.2), dpi=80)
        plt.close(self.fig)  # shown as a PNG rendered here: one draw, no "tight" bounding-box pass
        self.lines = {name: self.ax.plot([], [], marker=".", label=LABELS[name])[0] for name in accounting.ACCOUNTANTS}
        self.target_line = self.ax.axhline(1.0, color="k", ls=":", lw=0.8, label="target ε")
        self.ax.set_xscale("log")
        self.ax.set_yscale("log")
        for axis in (self.ax.xaxis, self.ax.yaxis):  # plain labels: TeX-style 10^k labels cost a parse per draw
            axis.set_minor_locator(NullLocator())
            axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        self.ax.set_xlabel("steps T")
        self.ax.set_ylabel("ε")
        self.ax.grid(alpha=0.3)
        self.ax.legend(fontsize=8, loc="upper left")
        self.fig.subplots_adjust(left=0.09, right=0.98, bottom=0.12, top=0.92)

    def draw(self, curves: dict, sigma: float, sampling_rate: float, steps: int, delta: float,
             target_epsilon: float) -> None:
        """Puts ``curves`` (from :func:`epsilon_curves`) and the target line on the figure."""
        lowest = math.inf
        for name, (grid, eps, _) in curves.items():
            self.lines[name].set_data(grid, eps)
            lowest = min(lowest, eps[eps > 0].min(initial=math.inf))
        self.target_line.set_ydata([target_epsilon, target_epsilon])
        self.ax.set_xlim(0.8, steps * 1.25)
        self.ax.set_ylim(max(min(lowest, target_epsilon) / 2, 1e-4), max(curves["naive"][1][-1], target_epsilon) * 2)
        self.ax.set_title(f"σ = {sigma:.2f}, q = {sampling_rate:.4g}, δ = {delta:g}")

    def png(self) -> bytes:
        png = io.BytesIO()
        self.fig.savefig(png, format="png")
        return png.getvalue()

    def update(self, sigma, sampling_rate, steps, delta, target_epsilon) -> None:
        """The widget's callback: redraws, displays the PNG and prints :func:`summary`."""
        from IPython.display import Image, display

        steps = int(round(steps))
        curves = epsilon_curves(sigma, sampling_rate, steps, delta)
        self.draw(curves, sigma, sampling_rate, steps, delta, target_epsilon)
        display(Image(self.png()))
        print(summary(curves, sampling_rate, steps, delta, target_epsilon))


def show(**values) -> Plot:
    """The default (static) view: draws once with ``DEFAULTS`` updated by ``values``."""
    plot = Plot()
    plot.update(**{**DEFAULTS, **values})
    return plot


def build(**values):
    """The widget: sliders σ, q, T, target ε and a δ dropdown (defaults ``DEFAULTS`` updated by
    ``values``) above the plot and its printed ε; each committed move redraws (``Plot.update``)."""
    import ipywidgets as widgets

    v = {**DEFAULTS, **values}
    controls = dict(
        sigma=widgets.FloatSlider(value=v["sigma"], min=0.5, max=10.0, step=0.1, description="σ",
                                  continuous_update=False),
        sampling_rate=widgets.FloatLogSlider(value=v["sampling_rate"], base=10, min=-4, max=0, step=0.05,
                                             description="q", readout_format=".4f", continuous_update=False),
        steps=widgets.FloatLogSlider(value=v["steps"], base=10, min=1, max=5, step=0.1, description="T",
                                     readout_format=",.0f", continuous_update=False),
        delta=widgets.Dropdown(options=[1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8], value=v["delta"], description="δ"),
        target_epsilon=widgets.FloatSlider(value=v["target_epsilon"], min=0.1, max=10.0, step=0.1,
                                           description="target ε", continuous_update=False),
    )
    output = widgets.interactive_output(Plot().update, controls)
    return widgets.VBox([widgets.HBox([controls["sigma"], controls["sampling_rate"], controls["steps"]]),
                         widgets.HBox([controls["delta"], controls["target_epsilon"]]), output])
