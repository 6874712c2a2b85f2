"""MNIST sweeps for notebooks/03: the accuracy grid behind the ε/accuracy widget, De et al.'s tuning lessons,
and the commands of the Abadi et al. table.

    python -m dpedu.experiments.mnist_sweep --quick --out dpedu/results/mnist_sweep_quick.json
    python -m dpedu.experiments.mnist_sweep --full --out dpedu/results/mnist_sweep_full.json
    python -m dpedu.experiments.mnist_sweep --table [--dry-run]

Every number comes from a real run of :func:`dpedu.train.train` (DP-SGD with Poisson sampling, ε from
dp-accounting for the mechanism that ran), stored whole with its provenance:

* **grid** (:data:`GRID_PARTS`): for a few noise multipliers σ and expected batch sizes (sampling rates
  q = B / N), one run each; its per-epoch evaluations give the test accuracy after T = e / q steps,
  e = 1, 2, .... The runs use a learning rate that does not depend on the run's length (constant, or
  Abadi et al.'s decay over a fixed 10 epochs), so the model after T steps of a longer run IS the
  model a T-step run with the same σ, q and seed trains. σ is set by giving the trainer the target
  ``ε(σ, q, T_run)``; it calibrates back to σ (within 1 %, recorded).
* **lessons** (:data:`LESSON_PARTS`): De et al. (2022)'s hyper-parameter lessons at a fixed (ε, δ):
  the clipping norm with and without rescaling the learning rate, constant vs. cosine learning
  rate, and batch size × epochs.
* **table** (:data:`TABLE_ROWS`, :func:`table_commands`): one ``dpedu train`` command per row of the
  Abadi et al. table (records ``dpedu/results/<config>-eps<ε>[-<epochs>ep].json``); not run by
  ``--quick``/``--full``.

Budgets. ``--quick``: a 4,000-image subset of MNIST, 12 short runs, about 4 minutes of wall time
on 2 shared CPU cores (measured: 247 s at load ~5); its accuracies are NOT full-mode numbers.
``--full``: full MNIST (60,000 training images), 21 runs of 1–3 epochs — 46 epochs of the CNN and 6
of the MLP in all — 960 s on 2 CPU cores at load ~3.5 (measured, before ghost clipping);
``--parts`` runs a subset. A table row trains on full MNIST: 6–11 minutes for a 30- or 40-epoch CNN
row; 1, 5 and 11–13 minutes for the MLP's 100-, 350- and 950-epoch rows with ghost clipping
(measured on 2 CPU cores).

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from dpedu import accounting, pca, provenance, sampling
from dpedu.configs import get_config

MODES = ("quick", "full")
DELTA = 1e-5
DELTA_ARGUMENT = "1e-5"  # DELTA as the table's commands spell it
LESSON_EPSILON = 3.0  # the lessons' privacy budget (ε, δ) = (3, 1e-5)
GRID_PARTS = ("grid-cnn", "grid-mlp")
LESSON_PARTS = ("clip-norm", "lr-schedule", "batch-epochs")
PARTS = GRID_PARTS + LESSON_PARTS

# Where the committed commands store their records (a checkout of the repository; absent in a pip install).
RESULTS_DIR = provenance.RESULTS_DIR
# Where new records are written from a clone (the package-data folder, as the path a command names).
RESULTS_ARGUMENT = "dpedu/results"

ABADI_PAPER = "Abadi et al. 2016 (paper)"
TRAMER_BONEH_PAPER = "Tramèr & Boneh 2021 (paper)"


@dataclasses.dataclass(frozen=True)
class TableRow:
    """One row of the Abadi et al. table: ``dpedu train`` of a registered config on full MNIST.

    Attributes:
        config: registered config name (:data:`dpedu.configs.CONFIGS`).
        target_epsilon: the ε (at δ = 1e-5) the run is calibrated to.
        epochs: training length; None keeps the config's (``--epochs`` otherwise).
        paper_accuracy: the paper's test accuracy at this ε, or None.
        paper: who reported it, labelled as the paper's.
    """

    config: str
    target_epsilon: float
    epochs: float | None = None
    paper_accuracy: float | None = None
    paper: str = ""


# Abadi et al. 2016 §5.2 (δ = 1e-5): 97 %, 95 %, 90 % at ε = 8, 2, 0.5, each with its noise level's
# DP-PCA σ_p (4, 7, 16): one config each, run for the configs' 30 epochs, and for as many
# epochs as make the calibrated σ about the paper's σ = 2, 4, 8 (ABADI_LONG_EPOCHS). The paper fixed σ
# and trained until its moments accountant reached ε; with PLD, σ = 2 reaches ε = 8 (DP-PCA
# included) after about 950 epochs, σ = 4 reaches ε = 2 after about 350 and σ = 8 reaches ε = 0.5
# after about 100. Tramèr & Boneh 2021 (end-to-end CNN, δ = 1e-5): 98.1 % at ε ≈ 3 after 40 epochs;
# the CNN is also run at the MLP's budgets and at ε = 1.
ABADI_LONG_EPOCHS = {8.0: 950.0, 2.0: 350.0, 0.5: 100.0}
_ABADI_ROWS = (("mnist-abadi-small-noise", 8.0, 0.97), ("mnist-abadi", 2.0, 0.95), ("mnist-abadi-large-noise", 0.5, 0.90))
TABLE_ROWS = (
    *(TableRow(config, eps, paper_accuracy=paper, paper=ABADI_PAPER) for config, eps, paper in _ABADI_ROWS),
    *(TableRow(config, eps, epochs=ABADI_LONG_EPOCHS[eps], paper_accuracy=paper, paper=ABADI_PAPER)
      for config, eps, paper in _ABADI_ROWS),
    # The same long runs plus De et al. 2022's parameter averaging (configs "<name>-ema").
    *(TableRow(f"{config}-ema", eps, epochs=ABADI_LONG_EPOCHS[eps], paper_accuracy=paper, paper=ABADI_PAPER)
      for config, eps, paper in _ABADI_ROWS[:2]),
    TableRow("mnist-cnn", 8.0),
    TableRow("mnist-cnn", 3.0, paper_accuracy=0.981, paper=TRAMER_BONEH_PAPER + ", 40 epochs"),
    TableRow("mnist-cnn", 3.0, epochs=40.0, paper_accuracy=0.981, paper=TRAMER_BONEH_PAPER + ", 40 epochs"),
    TableRow("mnist-cnn", 2.0),
    TableRow("mnist-cnn", 1.0),
    TableRow("mnist-cnn", 0.5),
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a sweep: a registered config with a few fields changed.

    Attributes:
        part: which part of the sweep it belongs to (one of :data:`PARTS`).
        config: registered config name (:data:`dpedu.configs.CONFIGS`).
        changes: ``(field, value)`` pairs replaced in the config (its quick variant in quick mode).
        noise_multiplier: grid runs: the σ wanted (the target ε is set to reach it); None for
            lesson runs, which train at ``target_epsilon = LESSON_EPSILON``.
        label: what the run shows, for plots.
    """

    part: str
    config: str
    changes: tuple = ()
    noise_multiplier: float | None = None
    label: str = ""


def _grid(config, sigmas, batch_sizes, epochs, part):
    return [Run(part, config, (("batch_size", b), ("epochs", epochs)), s, f"σ = {s:g}, B = {b}")
            for b in batch_sizes for s in sigmas]


def plan(mode: str, parts=PARTS) -> list[Run]:
    """The runs of the sweep ``mode`` (``"quick"`` or ``"full"``), restricted to ``parts``.

    Lessons (De et al. 2022's hyper-parameter advice, tried on Tramèr & Boneh's CNN at (ε, δ) = (3, 1e-5)):

    * ``clip-norm``: C = 0.1 and 1 with the learning rate η scaled so that η·C stays 0.05, and
      C = 1 with the unscaled η = 0.5 (full mode adds C = 0.01, η = 5). When every gradient is
      clipped, DP-SGD's update is η·C·(Σ unit vectors + σ·noise)/B: only η·C matters.
    * ``lr-schedule``: constant vs. cosine-decayed learning rate (full mode only).
    * ``batch-epochs``: expected batch sizes × epochs at the same ε (σ re-calibrated for each).

    Raises:
        ValueError: unknown ``mode`` or part.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"parts must be among {PARTS}, got {unknown}")
    quick = mode == "quick"
    epochs = 2.0  # the clip-norm and lr-schedule lessons
    clip = [(0.1, 0.5), (1.0, 0.05), (1.0, 0.5)] + ([] if quick else [(0.01, 5.0)])
    batches, batch_epochs = ((100, 400), (1.0, 2.0)) if quick else ((128, 512, 2048), (1.0, 3.0))
    runs = {
        "grid-cnn": (_grid("mnist-cnn", (0.8, 2.0), (200, 400), 2.0, "grid-cnn") if quick else
                     _grid("mnist-cnn", (0.5, 0.7, 1.0, 2.0), (256, 1024), 3.0, "grid-cnn")),
        "grid-mlp": (_grid("mnist-abadi", (4.0,), (200,), 2.0, "grid-mlp") if quick else
                     _grid("mnist-abadi", (1.0, 4.0), (600,), 3.0, "grid-mlp")),
        "clip-norm": [Run("clip-norm", "mnist-cnn", (("l2_clip_norm", c), ("lr", lr), ("epochs", epochs)),
                          label=f"C = {c:g}, η = {lr:g} (η·C = {lr * c:.3g})") for c, lr in clip],
        "lr-schedule": [] if quick else [
            Run("lr-schedule", "mnist-cnn", (("epochs", epochs),), label="constant η = 0.5"),
            Run("lr-schedule", "mnist-cnn", (("epochs", epochs), ("lr_schedule", "cosine")),
                label="cosine decay from η = 0.5"),
        ],
        "batch-epochs": [Run("batch-epochs", "mnist-cnn", (("batch_size", b), ("epochs", e)),
                             label=f"B = {b}, {e:g} epoch" + ("" if e == 1 else "s")) for b in batches for e in batch_epochs],
    }
    return [run for part in parts for run in runs[part]]


def run_config(run: Run, mode: str, num_examples: int):
    """The :class:`~dpedu.configs.TrainConfig` that ``run`` trains on ``num_examples`` examples.

    Grid runs get ``target_epsilon = ε(σ, q, T)`` of the mechanism that will run (DP-SGD, after the
    DP-PCA for the MLP), computed by the accountant the trainer calibrates with, so that its
    calibration returns σ. Quick runs use one micro-batch per step
    (:func:`dpedu.sampling.poisson_microbatch_size`), so each run compiles a single fused step.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    base = get_config(run.config, quick=mode == "quick")
    config = dataclasses.replace(base, **dict(run.changes))
    n = config.train_examples or num_examples
    if config.pca == "public":
        n -= config.public_examples
    q = config.batch_size / n
    steps = max(1, round(config.epochs / q))
    if run.noise_multiplier is None:
        target = LESSON_EPSILON
    else:
        event = accounting.dp_event(run.noise_multiplier, q, steps, sampler=config.sampler, num_examples=n)
        if config.pca == "dp":
            event = pca.composed_dp_event(config.pca_noise_multiplier, event)
        target = accounting.epsilon_for_event(event, config.delta, config.calibration_accountant or config.accountant)
    config = dataclasses.replace(config, target_epsilon=target)
    if config.quick:
        config = dataclasses.replace(config, microbatch_size=sampling.poisson_microbatch_size(n, q))
    return config


def run_sweep(runs, mode: str, dataset=None, data_dir=None, progress: bool = True) -> list[dict]:
    """Trains each run with :func:`dpedu.train.train`; returns ``{part, label, record}`` entries.

    Identical configs (e.g. the same baseline in two lessons) are trained once.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    from dpedu import data, train

    if dataset is None:
        dataset = data.load_mnist(data_dir=data_dir)
    done, entries = {}, []
    for run in runs:
        config = run_config(run, mode, len(dataset.train_labels))
        if config not in done:
            done[config] = train.train(config, data_dir=data_dir, progress=progress, dataset=dataset)
        entries.append({"part": run.part, "label": run.label, "record": done[config]})
    return entries


def grid_points(sweep: dict, config: str | None = None) -> list[dict]:
    """One point per (grid run, evaluated epoch): the model after T steps with noise σ and rate q.

    Args:
        sweep: a stored sweep (:func:`load_sweep`).
        config: keep only runs of this registered config (e.g. ``"mnist-cnn"``); None keeps all.

    Returns:
        Dicts with ``config``, ``model``, ``noise_multiplier``, ``sampling_rate``, ``steps``,
        ``epoch``, ``test_accuracy``, ``epsilon`` (ε after those T steps, as the run accounted
        it, DP-PCA included), ``delta`` and ``train_examples``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    points, seen = [], set()
    for entry in sweep["runs"]:
        rec = entry["record"]
        name = rec["config"]["name"]
        if entry["part"] not in GRID_PARTS or (config is not None and name != config):
            continue
        for h in rec["history"]:
            key = (name, rec["noise_multiplier"], rec["sampling_rate"], h["step"])
            if key in seen:  # the same run listed twice
                continue
            seen.add(key)
            points.append({"config": name, "model": rec["model"]["name"], "noise_multiplier": rec["noise_multiplier"],
                           "sampling_rate": rec["sampling_rate"], "steps": h["step"], "epoch": h["epoch"],
                           "test_accuracy": h["test_accuracy"], "epsilon": h["epsilon"], "delta": rec["delta"],
                           "train_examples": rec["dataset"]["train_examples"]})
    return points


def nearest_point(points: list[dict], noise_multiplier: float, sampling_rate: float, steps: int) -> tuple[dict, float]:
    """The stored point closest to (σ, q, T), distance measured between logarithms.

    No interpolation: the accuracy shown is that of a real run, at the point returned.

    Returns:
        ``(point, distance)``, ``distance`` = Euclidean distance of (ln σ, ln q, ln T); 0 when exact.

    Raises:
        ValueError: ``points`` is empty.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    if not points:
        raise ValueError("points must not be empty (the sweep has no grid run for this model)")
    here = np.log([noise_multiplier, sampling_rate, steps])
    there = np.log([[p["noise_multiplier"], p["sampling_rate"], p["steps"]] for p in points])
    distances = np.linalg.norm(there - here, axis=1)
    best = int(np.argmin(distances))
    return points[best], float(distances[best])


def lesson_runs(sweep: dict, part: str) -> list[dict]:
    """The ``{part, label, record}`` entries of one lesson of a stored or live sweep.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    return [entry for entry in sweep["runs"] if entry["part"] == part]


def sweep_path(mode: str, results_dir=None) -> Path:
    """``dpedu/results/mnist_sweep_<mode>.json``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return Path(RESULTS_DIR if results_dir is None else results_dir) / f"mnist_sweep_{mode}.json"


def load_sweep(mode: str, results_dir=None) -> dict | None:
    """The stored sweep of ``mode`` (``dpedu/results/mnist_sweep_<mode>.json``), or None if not run yet.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    return provenance.load_record(sweep_path(mode, results_dir).name, results_dir)


def table_record_path(row: TableRow, results_dir=None) -> Path:
    """Where ``row``'s run stores its record: ``<config>-eps<ε>.json``, ``-<epochs>ep`` added when
    the row overrides the config's epochs."""
    suffix = "" if row.epochs is None else f"-{row.epochs:g}ep"
    return Path(RESULTS_DIR if results_dir is None else results_dir) / f"{row.config}-eps{row.target_epsilon:g}{suffix}.json"


def table_command(row: TableRow, results_dir: str = RESULTS_ARGUMENT) -> list[str]:
    """The ``dpedu train`` command of ``row`` (full MNIST, full mode).

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    epochs = [] if row.epochs is None else ["--epochs", f"{row.epochs:g}"]
    return ["dpedu", "train", "--config", row.config, "--target-epsilon", f"{row.target_epsilon:g}",
            "--delta", DELTA_ARGUMENT, *epochs, "--out", str(table_record_path(row, results_dir))]


def table_commands(results_dir: str = RESULTS_ARGUMENT) -> list[list[str]]:
    """The ``dpedu train`` command of every row of :data:`TABLE_ROWS`.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    return [table_command(row, results_dir) for row in TABLE_ROWS]


def table_records(results_dir=None) -> dict:
    """``{row: record}`` for the rows of :data:`TABLE_ROWS` whose full-MNIST run is stored.

    A record counts only if it was made by the row's own ``dpedu train`` command, is private and
    not quick, trained the row's config for the row's epochs on all 60,000 MNIST training images and
    met the row's ε; rows without one are absent (show them as "not run yet").

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    rows = {}
    for row in TABLE_ROWS:
        path = table_record_path(row, results_dir)
        if not path.is_file():
            continue
        rec = json.loads(path.read_text())
        epochs = get_config(row.config).epochs if row.epochs is None else row.epochs
        if (rec.get("private") and not rec.get("quick") and rec.get("target_epsilon") == row.target_epsilon
                and rec.get("epsilon", math.inf) <= row.target_epsilon and rec.get("epochs") == epochs
                and rec.get("config", {}).get("name") == row.config
                and rec.get("dataset", {}).get("train_examples") == 60_000
                and _same_command(rec.get("command", ""), table_command(row))):
            rows[row] = rec
    return rows


def _same_command(recorded: str, expected: list[str]) -> bool:
    """``recorded`` is ``expected`` up to the folder of ``--out`` (records made before the results
    moved into the package name ``dpedu/results/``; the file name must still match)."""
    recorded_args = recorded.split()
    if len(recorded_args) != len(expected) or "--out" not in expected:
        return False
    out = expected.index("--out") + 1
    return (recorded_args[:out] == expected[:out] and recorded_args[out + 1:] == expected[out + 1:]
            and Path(recorded_args[out]).name == Path(expected[out]).name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpedu.experiments.mnist_sweep",
                                     description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="4,000-image subset, ~3 min on 2 CPU cores")
    mode.add_argument("--full", action="store_true", help="full MNIST, ~16 min on 2 CPU cores")
    mode.add_argument("--table", action="store_true", help="run the Abadi et al. table's dpedu train commands")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--out", help="JSON file to write (--quick/--full), e.g. results/mnist_sweep_quick.json")
    parser.add_argument("--dry-run", action="store_true", help="--table: print the commands, run nothing")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $DPEDU_DATA_DIR)")
    return parser


def _run_table(dry_run: bool) -> int:
    for command in table_commands():
        print(" ".join(command), flush=True)
        if not dry_run:
            # `python -m dpedu`: the record's provenance then names the `dpedu train` command.
            status = subprocess.run([sys.executable, "-m", "dpedu", *command[1:]]).returncode
            if status:
                print(f"  exited with status {status}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    from dpedu import provenance
    from dpedu.data import DataError

    args = build_parser().parse_args(argv)
    prog = "python -m dpedu.experiments.mnist_sweep"
    if args.table:
        return _run_table(args.dry_run)
    if not args.out:
        print(f"{prog}: error: --out is required with --quick or --full", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    # `python -m` puts the module's file path in sys.argv[0]; record the command as typed.
    command = " ".join([prog, *(argv if argv is not None else sys.argv[1:])])
    try:
        runs = plan(mode, tuple(p for p in args.parts.split(",") if p))
        start = time.perf_counter()
        entries = run_sweep(runs, mode, data_dir=args.data_dir)
    except (ValueError, DataError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    for entry in entries:
        entry["record"]["command"] = command
    result = provenance.record(
        command=command, experiment="mnist-sweep", mode=mode, delta=DELTA, lesson_epsilon=LESSON_EPSILON,
        dataset=entries[0]["record"]["dataset"] if entries else None,
        note=("quick mode: a 4,000-image subset of MNIST, short runs; NOT the full-mode numbers" if mode == "quick"
              else "full MNIST (60,000 training images)"),
        runs=entries, wall_seconds=time.perf_counter() - start, seed=0,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=provenance.jsonable) + "\n")
    for entry in entries:
        rec = entry["record"]
        print(f"{entry['part']:<13} {entry['label']:<32} acc {rec['test_accuracy']:.4f}  ε = {rec['epsilon']:.3f}  "
              f"σ = {rec['noise_multiplier']:.3f}  {rec['wall_seconds']:6.1f} s")
    print(f"wrote {out} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
