"""Notebook 06's widget: σ, q, T and the number of trials → the audit's lower bound on ε beside
the accountant's upper bound.

The trials are not trained: :func:`simulate_canary_scores` draws the exact distribution of a Dirac
gradient canary's total update under correct DP-SGD (Nasr et al. 2021, 2023), so 10⁵ trials take
milliseconds. :func:`audit_figure` runs :func:`dpedu.auditing.audit` on them: the assumption-free
bound always, the GDP bound of Nasr et al. 2023 only at sampling rate 1 (a Poisson-subsampled
Gaussian is not GDP, so the bound would not be valid). The accountant's ε is
:func:`dpedu.accounting.epsilon` (PLD, cached per point). The one-run audit of Steinke, Nasr &
Jagielski 2023 is not simulated here.

As in notebooks 04 and 05: :func:`show` draws the default setting as a static PNG (what nbval,
headless runs and the slide decks keep), :func:`build` returns the ipywidgets sliders wired to the
same drawing (live only with a front end).

Taught in notebooks/06_auditing.ipynb.
"""

from __future__ import annotations

import functools
import io
import math
import textwrap

import numpy as np

__all__ = ["DEFAULTS", "STEPS", "TRIALS", "GDP_NOT_VALID", "simulate_canary_scores", "accountant_epsilon",
           "audit_figure", "summary", "Plot", "show", "build"]

# Full batch, T = 10, σ = 3: ε ≈ 4.65 at δ = 1e-5; 10,000 trials a side.
DEFAULTS = dict(noise_multiplier=3.0, sampling_rate=1.0, steps=10, trials=10_000, delta=1e-5, seed=0)
STEPS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000)
TRIALS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
GDP_NOT_VALID = "GDP bound not valid: subsampled Gaussian is not GDP"


def simulate_canary_scores(noise_multiplier: float, sampling_rate: float, steps: int, trials: int,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(in_scores, out_scores)``: ``trials`` draws each of a Dirac gradient canary's total update.

    In units of ``lr·C/B`` (B the expected batch size): ``in = Σ_t b_t + σ√T·z`` with
    ``b_t ~ Bernoulli(q)`` independent (so ``Σ_t b_t ~ Binomial(T, q)``), ``out = σ√T·z``.

    Exact, not a model: the canary's gradient ``s·e_c`` (``s > C``) is clipped to ``C·e_c``; no data
    gradient reaches coordinate ``c``, so step t moves it by ``lr·(C·b_t + σC·z_t)/B`` (``b_t``: the
    canary was sampled, ``z_t`` the coordinate's fresh noise); T steps add up to the above, with
    ``σ√T·z = σ·Σ_t z_t``. ``tests/test_auditing.py::test_canary_trials_give_the_gaussian_mechanism_exactly``
    checks that the real DP-SGD code gives N(T, Tσ²) and N(0, Tσ²) at q = 1.

    Args:
        noise_multiplier: σ > 0.
        sampling_rate: q in (0, 1].
        steps: T ≥ 1.
        trials: trials per side, ≥ 1.
        seed: of ``numpy.random.default_rng``.

    Returns:
        Two ``float64 [trials]`` arrays.
    """
    from dpedu._validation import check_noise_multiplier, check_sampling_rate, check_steps

    sigma = check_noise_multiplier(noise_multiplier)
    q = check_sampling_rate(sampling_rate)
    steps = check_steps(steps)
    trials = check_steps(trials, "trials")
    rng = np.random.default_rng(seed)
    spread = sigma * math.sqrt(steps)
    in_scores = rng.binomial(steps, q, trials) + spread * rng.standard_normal(trials)
    out_scores = spread * rng.standard_normal(trials)
    return in_scores, out_scores


@functools.lru_cache(maxsize=512)
def accountant_epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> float:
    """:func:`dpedu.accounting.epsilon` (PLD), cached: sliders revisit points."""
    from dpedu import accounting

    return accounting.epsilon(noise_multiplier, sampling_rate, int(steps), delta)


def _full_batch(sampling_rate: float) -> bool:
    return float(sampling_rate) >= 1.0 - 1e-9  # a log slider's 10⁰ may arrive as 0.9999999999


def audit_figure(noise_multiplier: float, sampling_rate: float, steps: int, trials: int, delta: float = 1e-5,
                 seed: int = 0, fig=None) -> dict:
    """Simulates the trials, audits them and draws the scores (left) and the three ε (right).

    Left: histograms of the in and out scores. Right: bars for the accountant's ε (an upper bound),
    the assumption-free audit bound and, at ``sampling_rate == 1`` only, the GDP audit bound
    (Nasr et al. 2023); below 1 that bar is absent and labelled :data:`GDP_NOT_VALID`.

    Args:
        noise_multiplier, sampling_rate, steps, trials, seed: as :func:`simulate_canary_scores`.
        delta: δ of every ε.
        fig: a matplotlib ``Figure`` to clear and draw on; None makes a new one (outside pyplot).

    Returns:
        ``dict`` with the inputs and ``epsilon_accountant``, ``epsilon_audit`` (assumption-free),
        ``epsilon_gdp`` and ``mu_gdp`` (None unless full batch), ``mu`` (√T/σ when full batch, else
        None), ``gdp_valid``, ``threshold`` (the GDP test's), ``figure``.
    """
    from matplotlib.figure import Figure

    from dpedu import auditing

    if _full_batch(sampling_rate):
        sampling_rate = 1.0
    in_scores, out_scores = simulate_canary_scores(noise_multiplier, sampling_rate, steps, trials, seed)
    bound = auditing.audit(in_scores, out_scores, delta=delta, seed=seed)
    gdp_valid = _full_batch(sampling_rate)
    numbers = dict(
        noise_multiplier=float(noise_multiplier), sampling_rate=float(sampling_rate), steps=int(steps),
        trials=int(trials), delta=float(delta),
        epsilon_accountant=accountant_epsilon(float(noise_multiplier), float(sampling_rate), int(steps), float(delta)),
        epsilon_audit=bound.epsilon,
        epsilon_gdp=bound.epsilon_gdp if gdp_valid else None,
        mu_gdp=bound.mu_gdp if gdp_valid else None,
        mu=math.sqrt(steps) / noise_multiplier if gdp_valid else None,
        gdp_valid=gdp_valid, threshold=bound.threshold)

    if fig is None:
        fig = Figure(figsize=(11, 3.8), dpi=80)
    fig.clear()
    left, right = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=(1.6, 1)))
    bins = np.histogram_bin_edges(np.concatenate([in_scores, out_scores]), bins=80)
    left.hist(out_scores, bins=bins, density=True, histtype="stepfilled", alpha=0.45, color="C0",
              label="without the canary (out)")
    left.hist(in_scores, bins=bins, density=True, histtype="stepfilled", alpha=0.45, color="C3",
              label="with the canary (in)")
    if gdp_valid:
        left.axvline(bound.threshold, color="k", lw=1, ls="--", label="GDP test's threshold")
    left.set_xlabel("canary coordinate's total update (units of lr·C/B)")
    left.set_ylabel("density")
    left.legend(fontsize=7, loc="upper right")
    left.set_title(f"σ = {noise_multiplier:.3g}, q = {sampling_rate:.3g}, T = {int(steps):,}: "
                   f"{int(trials):,} trials a side", fontsize=10)

    labels = ["accountant ε\n(upper bound)", "audit ε\n(assumption-free)", "audit ε\n(GDP; q = 1)"]
    values = [numbers["epsilon_accountant"], numbers["epsilon_audit"], numbers["epsilon_gdp"]]
    colors = ["0.35", "C2", "C1"]
    shown = [v for v in values if v is not None and math.isfinite(v)]
    top = 1.2 * max(shown + [1e-3])
    for i, (value, color) in enumerate(zip(values, colors)):
        if value is None:
            right.text(i, 0.5 * top, textwrap.fill(GDP_NOT_VALID, 12), ha="center", va="center", fontsize=8,
                       color="C1")
            continue
        right.bar(i, min(value, top), color=color, width=0.6)
        right.text(i, min(value, top), f"{value:.3g}", ha="center", va="bottom", fontsize=9)
    right.set_xticks(range(3), labels, fontsize=8)
    right.set_xlim(-0.6, 2.6)
    right.set_ylim(0, top)
    right.set_ylabel(f"ε at δ = {delta:g}")
    right.set_title("audit: lower bounds; accountant: upper bound", fontsize=10)
    right.grid(axis="y", alpha=0.3)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.2, top=0.9, wspace=0.25)
    numbers["figure"] = fig
    return numbers


def summary(numbers: dict) -> str:
    """The text printed under the plot."""
    gdp = (f"GDP audit ε ≥ {numbers['epsilon_gdp']:.3g} (μ ≥ {numbers['mu_gdp']:.3g}; true μ = √T/σ = "
           f"{numbers['mu']:.3g})" if numbers["gdp_valid"] else
           "no GDP bound: with q < 1 DP-SGD is not GDP")
    return (f"accountant ε = {numbers['epsilon_accountant']:.3g} (upper bound, δ = {numbers['delta']:g}, "
            f"add/remove-one); assumption-free audit ε ≥ {numbers['epsilon_audit']:.3g}; {gdp}; "
            f"{numbers['trials']:,} trials a side, 95 % confidence")


class Plot:
    """One reused figure (outside pyplot); :meth:`update` redraws it and shows a PNG."""

    def __init__(self):
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(11, 3.8), dpi=80)
        self.numbers = None

    def draw(self, noise_multiplier, sampling_rate, steps, trials, delta=DEFAULTS["delta"],
             seed=DEFAULTS["seed"]) -> dict:
        self.numbers = audit_figure(noise_multiplier, sampling_rate, steps, trials, delta, seed, fig=self.fig)
        return self.numbers

    def png(self) -> bytes:
        png = io.BytesIO()
        self.fig.savefig(png, format="png")
        return png.getvalue()

    def update(self, noise_multiplier, sampling_rate, steps, trials, delta=DEFAULTS["delta"],
               seed=DEFAULTS["seed"]) -> None:
        """The widget's callback: redraws, displays the PNG and prints :func:`summary`."""
        from IPython.display import Image, display

        self.draw(noise_multiplier, sampling_rate, steps, trials, delta, seed)
        display(Image(self.png()))
        print(summary(self.numbers))


def show(**values) -> Plot:
    """The default (static) view: draws once with ``DEFAULTS`` updated by ``values``."""
    plot = Plot()
    plot.update(**{**DEFAULTS, **values})
    return plot


def build(**values):
    """The widget: sliders for σ (log), q (log), T and the trials per side above the plot (δ fixed)."""
    import ipywidgets as widgets

    v = {**DEFAULTS, **values}
    controls = dict(
        noise_multiplier=widgets.FloatLogSlider(value=v["noise_multiplier"], base=10, min=math.log10(0.5),
                                                max=math.log10(20), step=0.01, description="σ",
                                                readout_format=".3g", continuous_update=False),
        sampling_rate=widgets.FloatLogSlider(value=v["sampling_rate"], base=10, min=-2, max=0, step=0.05,
                                             description="q", readout_format=".3g", continuous_update=False),
        steps=widgets.SelectionSlider(options=list(STEPS), value=v["steps"], description="T",
                                      continuous_update=False),
        trials=widgets.SelectionSlider(options=list(TRIALS), value=v["trials"], description="trials",
                                       continuous_update=False),
    )
    plot = Plot()
    output = widgets.interactive_output(
        lambda noise_multiplier, sampling_rate, steps, trials: plot.update(
            noise_multiplier, sampling_rate, steps, trials, v["delta"], v["seed"]), controls)
    return widgets.VBox([widgets.HBox([controls["noise_multiplier"], controls["sampling_rate"]]),
                         widgets.HBox([controls["steps"], controls["trials"]]), output])
