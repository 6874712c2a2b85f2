"""Notebook 04's widget: the expected batch size B against σ(B), the steps T and the noise per
unit of signal σ(B)/B, at a fixed ε and number of epochs.

:func:`batch_size_table` computes, for a grid of batch sizes, the steps ``T = round(epochs·N/B)``,
the noise multiplier σ(B) calibrated to the target ε (:func:`dpedu.ladder.noise_to_signal`, RDP
accountant: a valid upper bound, a few milliseconds per σ) and ``σ(B)/B``; the table is cached per
(N, epochs, ε, δ), and :func:`build` computes the tables of every ε it offers before showing
anything, so a slider move only moves markers on one reused figure and renders a PNG (well under
0.3 s; ``tests/test_widgets_ladder_attack.py`` measures it).

Taught in notebooks/04_cifar10_ladder.ipynb.
"""

from __future__ import annotations

import functools
import io

import numpy as np

__all__ = ["DEFAULTS", "EPSILONS", "batch_size_grid", "batch_size_table", "summary", "Plot", "show", "build"]

# CIFAR-10's 50,000 training images, the paper-scale ladder's epochs (De et al.: 2,500 steps of 4,096).
DEFAULTS = dict(num_examples=50_000, epochs=204.8, target_epsilon=8.0, delta=1e-5, batch_size=4096)
EPSILONS = (1.0, 2.0, 4.0, 8.0)


def batch_size_grid(num_examples: int) -> np.ndarray:
    """Powers of two and their midpoints (×√2, rounded) from 16 up to ``num_examples``, and N itself."""
    grid = np.round(2.0 ** np.arange(4, np.log2(num_examples), 0.5)).astype(int)
    return np.unique(np.append(grid[grid < num_examples], num_examples))


@functools.lru_cache(maxsize=64)
def batch_size_table(num_examples: int, epochs: float, target_epsilon: float, delta: float) -> dict:
    """``{"batch_size", "steps", "sigma", "ratio"}``: arrays over :func:`batch_size_grid`."""
    from dpedu import ladder

    batch = batch_size_grid(num_examples)
    sigma, ratio = ladder.noise_to_signal(batch, num_examples=num_examples, epochs=epochs,
                                          target_epsilon=target_epsilon, delta=delta)
    steps = np.maximum(1, np.round(epochs * num_examples / batch)).astype(int)
    return {"batch_size": batch, "steps": steps, "sigma": np.asarray(sigma), "ratio": np.asarray(ratio)}


def _row(table: dict, batch_size: int) -> int:
    return int(np.argmin(np.abs(table["batch_size"] - batch_size)))


def summary(table: dict, batch_size: int, num_examples: int, epochs: float, target_epsilon: float,
            delta: float) -> str:
    """The text printed under the plot for the chosen batch size."""
    i = _row(table, batch_size)
    b, t, s, r = (table[k][i] for k in ("batch_size", "steps", "sigma", "ratio"))
    return (f"B = {b:,} (q = {b / num_examples:.4g}): T = {t:,} steps for {epochs:g} epochs, σ = {s:.3f} for "
            f"ε = {target_epsilon:g}, δ = {delta:g} (RDP, Poisson sampling, add/remove-one); "
            f"noise / signal σ/B = {r:.2e}")


class Plot:
    """Three panels (σ(B), T(B), σ(B)/B) on one reused figure; :meth:`png` renders it."""

    def __init__(self):
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullLocator

        self.fig, axes = plt.subplots(1, 3, figsize=(11, 3.3), dpi=80)
        plt.close(self.fig)
        self.axes = dict(zip(("sigma", "steps", "ratio"), axes))
        labels = {"sigma": "noise multiplier σ(B)", "steps": "steps T = epochs·N/B",
                  "ratio": "noise / signal  σ(B)/B"}
        self.curves, self.markers = {}, {}
        for key, ax in self.axes.items():
            self.curves[key] = ax.plot([], [], ".-", color="C0")[0]
            self.markers[key] = ax.plot([], [], "o", ms=10, color="C3")[0]
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):  # plain labels: TeX-style 10^k labels cost a parse per draw
                axis.set_minor_locator(NullLocator())
                axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.set_xlabel("expected batch size B")
            ax.set_title(labels[key], fontsize=9)
            ax.grid(alpha=0.3)
        self.guide = self.axes["ratio"].plot([], [], "--", color="grey", lw=1, label="∝ 1/√B")[0]
        self.axes["ratio"].legend(fontsize=8)
        self.fig.subplots_adjust(left=0.06, right=0.98, bottom=0.17, top=0.85, wspace=0.3)

    def draw(self, table: dict, batch_size: int, num_examples: int, epochs: float, target_epsilon: float,
             delta: float) -> None:
        """Puts ``table`` (from :func:`batch_size_table`) and the marker at ``batch_size`` on the figure."""
        b = table["batch_size"]
        i = _row(table, batch_size)
        for key, ax in self.axes.items():
            y = table[key]
            self.curves[key].set_data(b, y)
            self.markers[key].set_data([b[i]], [y[i]])
            ax.set_xlim(b[0] / 1.5, b[-1] * 1.5)
            ax.set_ylim(y.min() / 1.5, y.max() * 1.5)
        self.guide.set_data(b, table["ratio"][i] * np.sqrt(b[i] / b))
        self.fig.suptitle(f"at ε = {target_epsilon:g}, δ = {delta:g}, {epochs:g} epochs of N = {num_examples:,}: "
                          f"B = {b[i]:,} → σ = {table['sigma'][i]:.2f}, T = {table['steps'][i]:,}, "
                          f"σ/B = {table['ratio'][i]:.1e}", fontsize=10)

    def png(self) -> bytes:
        png = io.BytesIO()
        self.fig.savefig(png, format="png")
        return png.getvalue()

    def update(self, batch_size, target_epsilon, num_examples=DEFAULTS["num_examples"], epochs=DEFAULTS["epochs"],
               delta=DEFAULTS["delta"]) -> None:
        """The widget's callback: redraws, displays the PNG and prints :func:`summary`."""
        from IPython.display import Image, display

        table = batch_size_table(num_examples, epochs, target_epsilon, delta)
        self.draw(table, batch_size, num_examples, epochs, target_epsilon, delta)
        display(Image(self.png()))
        print(summary(table, batch_size, num_examples, epochs, target_epsilon, delta))


def show(**values) -> Plot:
    """The default (static) view: draws once with ``DEFAULTS`` updated by ``values``."""
    plot = Plot()
    plot.update(**{**DEFAULTS, **values})
    return plot


def build(**values):
    """The widget: a batch-size slider (the grid of :func:`batch_size_grid`) and an ε dropdown
    above the plot; N, epochs and δ stay fixed (``DEFAULTS`` updated by ``values``). The tables of
    every ε offered are computed here, so that each move only redraws."""
    import ipywidgets as widgets

    v = {**DEFAULTS, **values}
    fixed = dict(num_examples=v["num_examples"], epochs=v["epochs"], delta=v["delta"])
    for eps in EPSILONS:
        batch_size_table(v["num_examples"], v["epochs"], eps, v["delta"])
    grid = [int(b) for b in batch_size_grid(v["num_examples"])]
    start = grid[int(np.argmin(np.abs(np.array(grid) - v["batch_size"])))]
    controls = dict(
        batch_size=widgets.SelectionSlider(options=grid, value=start, description="B",
                                           continuous_update=False, layout=widgets.Layout(width="480px")),
        target_epsilon=widgets.Dropdown(options=list(EPSILONS), value=v["target_epsilon"], description="ε"),
    )
    plot = Plot()
    output = widgets.interactive_output(lambda batch_size, target_epsilon: plot.update(batch_size, target_epsilon,
                                                                                       **fixed), controls)
    return widgets.VBox([widgets.HBox([controls["batch_size"], controls["target_epsilon"]]), output])
