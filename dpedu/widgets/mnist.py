"""Notebook 03's widget: σ, q, T → ε (computed) and test accuracy (looked up in a stored sweep).

ε is computed on the spot by :mod:`dpedu.accounting` (RDP, and PLD on a coarser grid than
training uses: faster, still an upper bound; δ = 1e-5; for ``mnist-abadi`` the DP-PCA is composed
in). The accuracy is **looked up**, never predicted: it is the test accuracy of the stored sweep
run nearest to (σ, q, T) (:func:`dpedu.experiments.mnist_sweep.nearest_point`, distance between
logarithms). When that run is farther than :data:`NEAR_DISTANCE`, the widget greys its marker out
and says "no stored run near" instead of showing an accuracy that belongs to another setting.

:class:`Plot` draws on one figure outside pyplot: the part without the moving markers (ticks,
labels, legend, stored runs: rendering text is the slow part) is rendered once per model and
x-range and kept; a slider move pastes it back and draws only the markers. A redraw, ε included,
takes well under 0.3 s (``tests/test_widgets_mnist.py`` measures it with :func:`redraw_seconds`).

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

import functools
import io
import time

import numpy as np

from dpedu import accounting, configs, pca
from dpedu.experiments import mnist_sweep

__all__ = ["NEAR_DISTANCE", "PLD_DISCRETIZATION", "epsilons", "sweep_configs", "default_point", "lookup",
           "describe", "Plot", "show", "build", "redraw_seconds"]

# Log-distance beyond which the nearest stored run is "not near": 0.5 is a factor e^0.5 ≈ 1.65 in one
# of σ, q, T (the sweeps' grids are a factor 2 apart, log-distance 0.69).
NEAR_DISTANCE = 0.5
PLD_DISCRETIZATION = 2e-3  # training uses 1e-4: coarser is faster and still an upper bound
DELTA = mnist_sweep.DELTA


@functools.lru_cache(maxsize=512)
def epsilons(config: str, sigma: float, sampling_rate: float, steps: int) -> tuple[float, float]:
    """(ε by RDP, ε by PLD) at δ = 1e-5 of what ``config`` runs: DP-SGD (σ, q, T) with Poisson
    sampling under add/remove-one neighbours, after the DP-PCA if the config has one."""
    cfg = configs.get_config(config)
    event = accounting.dp_event(sigma, sampling_rate, steps)
    rdp = steps * accounting.rdp_poisson_gaussian(sigma, sampling_rate)  # Rényi DP adds up over steps
    if cfg.pca == "dp":  # the DP-PCA: one Gaussian mechanism on all the data (sampling rate 1)
        event = pca.composed_dp_event(cfg.pca_noise_multiplier, event)
        rdp = rdp + accounting.rdp_poisson_gaussian(cfg.pca_noise_multiplier, 1.0)
    pld = accounting.epsilon_for_event(event, DELTA, "pld", pld_value_discretization=PLD_DISCRETIZATION)
    return accounting.rdp_to_epsilon(accounting.RDP_ORDERS, rdp, DELTA), pld


def sweep_configs(sweep: dict) -> list[str]:
    """The models with grid runs in ``sweep``, the CNN first."""
    return sorted({p["config"] for p in mnist_sweep.grid_points(sweep)}, key=lambda c: c != "mnist-cnn")


def default_point(sweep: dict) -> dict:
    """The widget's starting values: the first stored grid run of the first model (an exact match)."""
    config = sweep_configs(sweep)[0]
    point = mnist_sweep.grid_points(sweep, config)[0]
    return {"config": config, "sigma": point["noise_multiplier"], "sampling_rate": point["sampling_rate"],
            "steps": int(point["steps"])}


def lookup(sweep: dict, config: str, sigma: float, sampling_rate: float, steps: int) -> tuple[dict, float, bool]:
    """``(nearest stored run, log-distance, near)``; ``near`` is ``distance <= NEAR_DISTANCE``."""
    nearest, distance = mnist_sweep.nearest_point(mnist_sweep.grid_points(sweep, config), sigma, sampling_rate, steps)
    return nearest, distance, distance <= NEAR_DISTANCE


def describe(config: str, sigma: float, sampling_rate: float, steps: int, eps: tuple[float, float],
             nearest: dict, distance: float, near: bool) -> str:
    """The two lines printed under the figure."""
    eps_rdp, eps_pld = eps
    first = (f"{config}: σ = {sigma:.3g}, q = {sampling_rate:.4g}, T = {int(steps)}  ->  ε = {eps_pld:.3f} (PLD), "
             f"{eps_rdp:.3f} (RDP); Poisson sampling, add/remove-one, δ = {DELTA:g}")
    run = (f"σ = {nearest['noise_multiplier']:.3g}, q = {nearest['sampling_rate']:.4g}, T = {nearest['steps']}")
    if not near:
        return (first + f"\nno stored run near (σ, q, T): the nearest ({run}) is at log-distance {distance:.2f} "
                f"> {NEAR_DISTANCE}, so no accuracy is shown for your setting")
    match = "exact" if distance < 1e-9 else f"nearest stored run, log-distance {distance:.2f}"
    return first + f"\naccuracy {nearest['test_accuracy']:.3f} of the run with {run} ({match})"


class Plot:
    """The figure of the stored runs (ε, test accuracy), your ε and the nearest run; redrawn in place."""

    def __init__(self, sweep: dict):
        import matplotlib.colors
        import matplotlib.figure
        import matplotlib.ticker
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.sweep = sweep
        label = f"{sweep['mode']} sweep on {sweep['dataset']['name']}"
        if sweep["mode"] == "quick":
            label += "\nquick mode: NOT the full-mode numbers"
        self.fig = matplotlib.figure.Figure(figsize=(6.5, 3.2))
        FigureCanvasAgg(self.fig)
        ax = self.ax = self.fig.add_subplot()
        self.stored = ax.scatter([], [], c=[], s=25, cmap="viridis", norm=matplotlib.colors.LogNorm(0.3, 10))
        self.fig.colorbar(self.stored, ax=ax, label="σ of the stored run", ticks=[0.3, 0.5, 1, 2, 5, 10],
                          format="{x:g}")
        (self.star,) = ax.plot([], [], "r*", ms=14, label="the stored run nearest to your (σ, q, T)")
        self.your_epsilon = ax.axvline(1.0, color="r", lw=0.8, ls="--", label="your ε (PLD)")
        self.far_note = ax.text(0.98, 0.04, "no stored run near your (σ, q, T)", transform=ax.transAxes,
                                ha="right", va="bottom", fontsize=8, color="0.35")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter("{x:g}")
        ax.xaxis.set_minor_formatter("")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"ε after T steps (δ = {DELTA:g})")
        ax.set_ylabel("test accuracy")
        ax.set_title(label, fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
        self.fig.tight_layout()  # once: the layout stays fixed at every redraw
        self._backgrounds = {}  # (model, x-limits) -> the rendered figure without the moving markers
        self.text = ""

    def draw(self, config: str, sigma: float, sampling_rate: float, steps: int) -> bytes:
        """Draws the figure for (config, σ, q, T), sets :attr:`text`, returns the PNG."""
        import matplotlib.ticker
        import PIL.Image

        steps = int(steps)
        eps = epsilons(config, round(float(sigma), 4), round(float(sampling_rate), 6), steps)
        points = mnist_sweep.grid_points(self.sweep, config)
        nearest, distance, near = lookup(self.sweep, config, sigma, sampling_rate, steps)
        all_eps = [p["epsilon"] for p in points] + [eps[1]]
        # x-limits rounded out to powers of 10, so that a few backgrounds serve every slider position
        xlim = tuple(10.0 ** np.array([np.floor(np.log10(min(all_eps) / 1.2)), np.ceil(np.log10(max(all_eps) * 1.2))]))
        ax, canvas = self.ax, self.fig.canvas
        ax.set_xlim(*xlim)
        if (config, xlim) not in self._backgrounds:
            decades = np.log10(xlim[1] / xlim[0])  # 1-2-5 ticks on a short range, powers of 10 on a long one
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5) if decades <= 3 else (1,)))
            self.stored.set_offsets([[p["epsilon"], p["test_accuracy"]] for p in points])
            self.stored.set_array(np.array([p["noise_multiplier"] for p in points]))
            for artist in (self.star, self.your_epsilon, self.far_note):
                artist.set_visible(False)
            canvas.draw()
            self._backgrounds[config, xlim] = canvas.copy_from_bbox(self.fig.bbox)
            for artist in (self.star, self.your_epsilon, self.far_note):
                artist.set_visible(True)
        canvas.restore_region(self._backgrounds[config, xlim])
        self.star.set_data([nearest["epsilon"]], [nearest["test_accuracy"]])
        # beyond NEAR_DISTANCE the nearest run is another setting: grey, hollow, and said so
        self.star.set_color("r" if near else "0.6")
        self.star.set_markerfacecolor("r" if near else "none")
        self.your_epsilon.set_xdata([eps[1], eps[1]])
        ax.draw_artist(self.star)
        ax.draw_artist(self.your_epsilon)
        if not near:
            ax.draw_artist(self.far_note)
        self.text = describe(config, sigma, sampling_rate, steps, eps, nearest, distance, near)
        png = io.BytesIO()  # fast PNG compression: the image is shown once, not stored
        PIL.Image.fromarray(np.asarray(canvas.buffer_rgba())).save(png, format="png", compress_level=1)
        return png.getvalue()

    def update(self, config: str, sigma: float, sampling_rate: float, steps: int) -> None:
        """The widget's callback: draws, displays the PNG and prints :meth:`describe`'s lines."""
        from IPython.display import Image, display

        display(Image(self.draw(config, sigma, sampling_rate, steps)))
        print(self.text)


def show(sweep: dict, **values) -> Plot:
    """The default (static) view: draws once at :func:`default_point` updated by ``values``."""
    plot = Plot(sweep)
    plot.update(**{**default_point(sweep), **values})
    return plot


def build(sweep: dict, plot: Plot | None = None):
    """The widget: a model dropdown and σ, q, T sliders (starting at :func:`default_point`) above
    the figure; each committed slider move redraws (:meth:`Plot.update`)."""
    import ipywidgets as widgets

    plot = plot or Plot(sweep)
    v = default_point(sweep)
    style = {"description_width": "2em"}
    controls = dict(
        config=widgets.Dropdown(options=sweep_configs(sweep), value=v["config"], description="model"),
        sigma=widgets.FloatLogSlider(value=v["sigma"], base=10, min=-0.5, max=1, step=0.01, description="σ",
                                     continuous_update=False, style=style),
        sampling_rate=widgets.FloatLogSlider(value=v["sampling_rate"], base=10, min=-3.5, max=-0.5, step=0.01,
                                             description="q", readout_format=".4f", continuous_update=False,
                                             style=style),
        steps=widgets.IntSlider(value=v["steps"], min=1, max=5000, description="T", continuous_update=False,
                                style=style),
    )
    output = widgets.interactive_output(plot.update, controls)
    return widgets.VBox([widgets.HBox([controls["config"], controls["sigma"]]),
                         widgets.HBox([controls["sampling_rate"], controls["steps"]]), output])


# New, uncached slider positions (σ, q, T) for timing redraws.
TIMING_POSITIONS = ((0.9, 0.01, 150), (1.3, 0.03, 400), (2.5, 0.1, 1000), (0.7, 0.004, 77), (4.0, 0.02, 2500),
                    (1.7, 0.06, 640))


def redraw_seconds(plot: Plot, positions=TIMING_POSITIONS) -> dict:
    """``{model: [seconds per redraw]}``: the whole callback's work (ε, look-up, figure, PNG) at
    ``positions``, for every model of the sweep. The first draw of a model (its background) is
    made before timing, as the static figure does in the notebook."""
    timings = {}
    for config in sweep_configs(plot.sweep):
        plot.draw(config, *positions[0])
        timings[config] = []
        for sigma, q, steps in positions:
            start = time.perf_counter()
            plot.draw(config, sigma * 1.0001, q, steps)  # a fresh ε, not a cached one
            timings[config].append(time.perf_counter() - start)
    return timings
