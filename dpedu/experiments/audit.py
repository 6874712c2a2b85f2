"""Audits the course's DP-SGD with gradient canaries and stores a record.

    python -m dpedu.experiments.audit --quick|--full --out dpedu/results/audit_<mode>.json

Three experiments, all by :mod:`dpedu.auditing` on the library's own steps:

1. tight audit (Nasr et al. 2023): full-batch DP-SGD (sampling rate 1) on a few MNIST images
   with one Dirac gradient canary on a weight that no data gradient touches, ``trials`` runs with
   and ``trials`` without it, at the σ the accountant calibrates for each ε of ``tight_epsilons``;
   the lower bounds (assumption-free and GDP) beside the accountant's ε;
2. three broken steps (:mod:`dpedu.bugs`), each with its correct twin under the same claim
   (``bug_epsilon``): the audit's lower bound against the claimed ε;
3. one run (Steinke, Nasr & Jagielski 2023): one DP-SGD training run on MNIST with
   ``one_run_canaries`` gradient canaries, each in the training set with probability ½, at each ε
   of ``one_run_epsilons``; the one-run lower bound beside the accountant's ε.

Every ε is for δ = ``delta`` and adding or removing one example (the canary).

Taught in notebooks/06_auditing.ipynb.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import jax
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from dpedu import accounting, attacks, auditing, bugs, data, dpsgd, provenance, train
from dpedu.experiments import _driver
from dpedu.progress import progress

EXPERIMENT = "dpsgd_audit"
# The first (input) layer of dpedu.attacks.SmallMLP: Flax names its layers in the order they are
# built, and SmallMLP builds the output layer first.
FIRST_LAYER = ("params", "Dense_1")
NUM_CLASSES = 10
# Steinke, Nasr & Jagielski 2023, abstract: white-box, CIFAR-10 Wide-ResNet, one training run.
PAPER_ONE_RUN = {"epsilon_lower_bound": 1.8, "epsilon": 4.0,
                 "source": "Steinke, Nasr & Jagielski 2023 (NeurIPS), abstract: white-box, CIFAR-10 WRN, one run"}


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Sizes of one run of the three experiments.

    Attributes:
        audit_examples: real MNIST training images in the audited data set of experiments 1–2.
        audit_hidden_units: hidden units of the audited :class:`dpedu.attacks.SmallMLP`.
        l2_clip_norm: C; the canary's raw gradient norm is ``canary_scale · C``.
        canary_scale: how far above C the canary's raw gradient is (a broken clip lets it through).
        learning_rate: SGD learning rate of every audited run.
        delta: δ of every ε.
        tight_epsilons: ε of the tight audit; ``tight_steps`` full-batch steps, ``tight_trials`` per side.
        bug_epsilon: the ε every broken step claims; ``bug_trials`` per side.
        bug_steps: steps of the full-batch bug settings; ``noise_bug_steps`` at ``noise_bug_sampling_rate``.
        copies: augmentation multiplicity K of the copy-clipping bug.
        one_run_epsilons: ε of the one-run audits; ``one_run_canaries`` canaries, ``one_run_epochs``
            epochs at expected batch ``one_run_batch_size`` on ``one_run_examples`` images (None: all).
        one_run_hidden_units: hidden units of the one-run model.
        trials_per_batch: trials vectorised at once.
        seed: every random choice derives from it.
    """

    audit_examples: int = 8
    audit_hidden_units: int = 8
    l2_clip_norm: float = 1.0
    canary_scale: float = 10.0
    learning_rate: float = 1.0
    delta: float = 1e-5
    tight_epsilons: tuple[float, ...] = (1.0, 4.0)
    tight_steps: int = 4
    tight_trials: int = 50_000
    bug_epsilon: float = 2.0
    bug_trials: int = 5_000
    bug_steps: int = 4
    noise_bug_steps: int = 8
    noise_bug_sampling_rate: float = 0.5
    copies: int = 8
    one_run_epsilons: tuple[float, ...] = (2.0, 8.0)
    one_run_canaries: int = 1000
    one_run_examples: int | None = None
    one_run_epochs: int = 5
    one_run_batch_size: int = 1024
    one_run_hidden_units: int = 64
    one_run_learning_rate: float = 0.5
    trials_per_batch: int = 1024
    seed: int = 0


CONFIGS = {
    "full": AuditConfig(),
    # The notebook's live run and CI: well under a minute on 2 CPU cores.
    "quick": AuditConfig(tight_trials=2_000, bug_trials=500, one_run_epsilons=(8.0,), one_run_canaries=500,
                         one_run_examples=2_000, one_run_epochs=3, one_run_batch_size=256,
                         one_run_hidden_units=16, trials_per_batch=512),
}


def _bound_row(bound: auditing.AuditBound) -> dict:
    return {key: value for key, value in dataclasses.asdict(bound).items() if key not in ("delta", "confidence")}


class AuditSetting:
    """The audited model, data set and canary coordinates shared by experiments 1 and 2."""

    def __init__(self, dataset: data.Dataset, config: AuditConfig):
        self.config = config
        rng = np.random.default_rng(config.seed)
        chosen = rng.choice(len(dataset.train_labels), config.audit_examples, replace=False)
        self.images = dataset.train_images[chosen]
        self.labels = dataset.train_labels[chosen]
        self.module = attacks.SmallMLP(hidden_units=config.audit_hidden_units)
        self.params = self.module.init(jax.random.key(config.seed), self.images[:1])
        # A weight of a pixel that is 0 in every training image: no data gradient ever reaches it.
        self.kernel_coordinate = int(auditing.zero_input_coordinates(
            (*FIRST_LAYER, "kernel"), self.params, dataset.train_images)[0])
        # A bias of the first layer: every example's gradient reaches it (for the unclipped-bias bug).
        self.bias_coordinate = int(auditing.parameter_coordinates((*FIRST_LAYER, "bias"), self.params)[0])

    def loss(self, coordinate: int):
        return auditing.with_gradient_canaries(attacks.cross_entropy_loss(self.module), [coordinate],
                                               num_classes=NUM_CLASSES,
                                               canary_gradient_norm=self.config.canary_scale * self.config.l2_clip_norm)

    def run(self, make_step, *, coordinate: int, epsilon: float, steps: int, sampling_rate: float, trials: int,
            seed: int, copies: int | None = None, score=auditing.total_update_score, **step_kwargs) -> dict:
        config = self.config
        sigma = accounting.calibrate_noise_multiplier(epsilon, sampling_rate, steps, config.delta)
        step = make_step(self.loss(coordinate), optax.sgd(config.learning_rate), l2_clip_norm=config.l2_clip_norm,
                         noise_multiplier=sigma, expected_batch_size=sampling_rate * config.audit_examples,
                         **step_kwargs)
        images, canary = self.images, np.zeros_like(self.images[0])
        if copies is not None:  # K copies of each example (identical: the canary's gradient ignores its input)
            images = np.repeat(images[:, None], copies, axis=1)
            canary = np.repeat(canary[None], copies, axis=0)
        start = time.perf_counter()
        bound = auditing.run_audit(step, self.params, images, self.labels, canary_input=canary,
                                   canary_label=NUM_CLASSES, coordinate=coordinate, trials=trials, steps=steps,
                                   sampling_rate=sampling_rate, delta=config.delta, seed=seed, score=score,
                                   trials_per_batch=config.trials_per_batch)
        row = {"claimed_epsilon": epsilon, "accountant_epsilon": accounting.epsilon(sigma, sampling_rate, steps,
                                                                                     config.delta),
               "noise_multiplier": sigma, "sampling_rate": sampling_rate, "steps": steps, "trials_per_side": trials,
               **_bound_row(bound), "wall_seconds": time.perf_counter() - start}
        if sampling_rate < 1:
            # A Poisson-subsampled Gaussian is not Gaussian DP: its trade-off curve is not a GDP curve,
            # so the GDP bound would not be a valid lower bound here. Only the assumption-free one is.
            row.update(epsilon_gdp=None, mu_gdp=None)
        return row


def run_tight(setting: AuditSetting) -> list[dict]:
    config = setting.config
    rows = []
    for i, epsilon in enumerate(progress(config.tight_epsilons, desc="tight audit")):
        row = setting.run(dpsgd.make_dp_step, coordinate=setting.kernel_coordinate, epsilon=epsilon,
                          steps=config.tight_steps, sampling_rate=1.0, trials=config.tight_trials,
                          seed=config.seed + 10 + i)
        row["ratio_gdp"] = row["epsilon_gdp"] / row["accountant_epsilon"]
        row["ratio"] = row["epsilon"] / row["accountant_epsilon"]
        rows.append(row)
    return rows


def _augmult_correct_step(loss_fn, optimizer, **kwargs):
    return dpsgd.make_dp_step(loss_fn, optimizer, augmult=True, **kwargs)


BUGS = {
    "kernels_only": {
        "description": "clips each example's gradient over the kernels only; biases pass unclipped",
        "broken": bugs.make_step_clipping_kernels_only, "correct": dpsgd.make_dp_step,
        "coordinate": "bias", "sampling_rate": 1.0, "steps": "bug_steps", "score": "total_update"},
    "reused_noise_key": {
        "description": "draws the noise from one fixed key in every step (the same noise each step)",
        "broken": bugs.make_step_reusing_noise_key, "correct": dpsgd.make_dp_step,
        "coordinate": "kernel", "sampling_rate": "noise_bug_sampling_rate", "steps": "noise_bug_steps",
        "score": "update_change"},
    "copies_clipped_separately": {
        "description": "clips each augmented copy's gradient to C and sums the K copies (sensitivity K·C)",
        "broken": bugs.make_step_clipping_each_copy, "correct": _augmult_correct_step,
        "coordinate": "kernel", "sampling_rate": 1.0, "steps": "bug_steps", "score": "total_update", "copies": True},
}
SCORES = {"total_update": auditing.total_update_score, "update_change": auditing.update_change_score}


def _setting_value(config: AuditConfig, value):
    return getattr(config, value) if isinstance(value, str) else value


def run_bugs(setting: AuditSetting) -> dict:
    config = setting.config
    results = {}
    for i, (name, bug) in enumerate(progress(list(BUGS.items()), desc="bugs")):
        coordinate = setting.bias_coordinate if bug["coordinate"] == "bias" else setting.kernel_coordinate
        common = dict(coordinate=coordinate, epsilon=config.bug_epsilon,
                      steps=_setting_value(config, bug["steps"]),
                      sampling_rate=_setting_value(config, bug["sampling_rate"]), trials=config.bug_trials,
                      seed=config.seed + 20 + i, score=SCORES[bug["score"]],
                      copies=config.copies if bug.get("copies") else None)
        broken = setting.run(bug["broken"], **common)
        correct = setting.run(bug["correct"], **common)
        results[name] = {"description": bug["description"], "canary_coordinate": bug["coordinate"],
                         "score": bug["score"], "broken": broken, "correct": correct,
                         "caught": broken["epsilon"] > broken["claimed_epsilon"],
                         "correct_passes": correct["epsilon"] <= correct["claimed_epsilon"]}
    return results


def run_one_run(dataset: data.Dataset, config: AuditConfig) -> list[dict]:
    images, labels = dataset.train_images, dataset.train_labels
    if config.one_run_examples is not None:
        images, labels = images[:config.one_run_examples], labels[:config.one_run_examples]
    module = attacks.SmallMLP(hidden_units=config.one_run_hidden_units)
    rows = []
    for i, epsilon in enumerate(config.one_run_epsilons):
        seed = config.seed + 30 + i
        rng = np.random.default_rng(seed)
        params = module.init(jax.random.key(seed), images[:1])
        coordinates = auditing.zero_input_coordinates((*FIRST_LAYER, "kernel"), params, images)
        if coordinates.size < config.one_run_canaries:
            raise ValueError(f"only {coordinates.size} weights see always-zero pixels; ask for fewer canaries")
        coordinates = rng.choice(coordinates, config.one_run_canaries, replace=False)
        canary_in = rng.random(config.one_run_canaries) < 0.5
        num_examples = len(labels) + int(canary_in.sum())
        sampling_rate = config.one_run_batch_size / num_examples
        steps = max(1, round(config.one_run_epochs / sampling_rate))
        sigma = accounting.calibrate_noise_multiplier(epsilon, sampling_rate, steps, config.delta)
        loss = auditing.with_gradient_canaries(attacks.cross_entropy_loss(module), coordinates,
                                               num_classes=NUM_CLASSES,
                                               canary_gradient_norm=config.canary_scale * config.l2_clip_norm)
        step = dpsgd.make_dp_step(loss, optax.sgd(config.one_run_learning_rate), l2_clip_norm=config.l2_clip_norm,
                                  noise_multiplier=sigma, expected_batch_size=sampling_rate * num_examples)
        start = time.perf_counter()
        trained = auditing.train_with_canaries(
            step, params, images, labels, num_classes=NUM_CLASSES, canary_in=canary_in, steps=steps,
            sampling_rate=sampling_rate, seed=seed,
            microbatch_size=min(num_examples, 2 * config.one_run_batch_size))
        wall = time.perf_counter() - start
        moved = np.asarray(ravel_pytree(params)[0] - ravel_pytree(trained)[0])[coordinates]
        rows.append({
            "epsilon": epsilon,
            "accountant_epsilon": accounting.epsilon(sigma, sampling_rate, steps, config.delta),
            "one_run_lower_bound": auditing.one_run_epsilon(moved[canary_in], moved[~canary_in],
                                                            delta=config.delta),
            "canaries": config.one_run_canaries, "canaries_in": int(canary_in.sum()),
            "noise_multiplier": sigma, "sampling_rate": sampling_rate, "steps": steps,
            "training_examples": len(labels),
            "test_accuracy": train.evaluate(module, trained, dataset.test_images, dataset.test_labels)["accuracy"],
            "wall_seconds": wall,
        })
    return rows


def run(config: AuditConfig, mode: str, data_dir=None, command: str | None = None) -> dict:
    """The three experiments for ``config``; returns the record (with provenance) without writing it."""
    start, start_cpu, load_start = time.perf_counter(), time.process_time(), os.getloadavg()
    dataset = data.load_mnist(data_dir=data_dir, quick=mode == "quick")
    setting = AuditSetting(dataset, config)
    tight = run_tight(setting)
    broken = run_bugs(setting)
    one_run = run_one_run(dataset, config)
    extra = {} if command is None else {"command": command}
    return provenance.record(
        **extra,
        experiment=EXPERIMENT,
        mode=mode,
        data=dataset.name,
        mechanism=("DP-SGD (dpedu.dpsgd.make_dp_step: per-example clipping, Gaussian noise once per step, "
                   "SGD) with Poisson sampling at the stated rate (rate 1: full batch); ε from "
                   "dpedu.accounting.epsilon (PLD, add/remove one example); bounds with 95 % confidence"),
        model="dpedu.attacks.SmallMLP",
        config=dataclasses.asdict(config),
        tight=tight,
        bugs=broken,
        one_run=one_run,
        paper_one_run=PAPER_ONE_RUN,
        seed=config.seed,
        wall_seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - start_cpu,
        load_average=[load_start[0], os.getloadavg()[0]],
        cpu_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    )


def load_results(mode: str = "full", results_dir=None) -> dict | None:
    """The stored record ``audit_<mode>.json`` shipped with dpedu, or None if not run yet.

    Taught in notebooks/06_auditing.ipynb.
    """
    return _driver.load_results("audit", mode, CONFIGS, results_dir)


def _fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def tight_table(record: dict) -> str:
    """The tight audit of a record as a text table (accountant ε beside both lower bounds).

    Taught in notebooks/06_auditing.ipynb.
    """
    lines = [f"White-box Dirac canary, full batch, {record['data']}; stored run, commit {record['git_commit'][:8]}",
             f"{'accountant ε':>12} {'trials/side':>11} {'audit ε ≥ (no assumption)':>26} {'audit ε ≥ (GDP)':>16} "
             f"{'GDP / accountant':>16}"]
    for row in record["tight"]:
        lines.append(f"{row['accountant_epsilon']:>12.2f} {row['trials_per_side']:>11,} {row['epsilon']:>26.2f} "
                     f"{_fmt(row['epsilon_gdp']):>16} {_fmt(row['ratio_gdp']):>16}")
    return "\n".join(lines)


def bugs_table(record: dict) -> str:
    """The bug audits of a record: claimed ε, then the audit of the broken step and of its correct twin.

    Taught in notebooks/06_auditing.ipynb.
    """
    lines = [f"Each step claims ε = {record['config']['bug_epsilon']} (δ = {record['config']['delta']:g}); "
             f"assumption-free 95 % lower bounds, {record['config']['bug_trials']:,} trials a side",
             f"{'step':<28} {'broken: ε ≥':>12} {'caught':>7} {'correct twin: ε ≥':>18}"]
    for name, row in record["bugs"].items():
        lines.append(f"{name:<28} {row['broken']['epsilon']:>12.2f} {'yes' if row['caught'] else 'NO':>7} "
                     f"{row['correct']['epsilon']:>18.2f}")
    return "\n".join(lines)


def one_run_table(record: dict) -> str:
    """The one-run audits of a record beside the accountant's ε, and the paper's number, labelled.

    Taught in notebooks/06_auditing.ipynb.
    """
    lines = [f"One training run, {record['data']}, white-box gradient canaries (stored run)",
             f"{'accountant ε':>12} {'canaries':>8} {'one-run audit ε ≥':>18} {'test accuracy':>13}"]
    for row in record["one_run"]:
        lines.append(f"{row['accountant_epsilon']:>12.2f} {row['canaries']:>8,} {row['one_run_lower_bound']:>18.2f} "
                     f"{row['test_accuracy']:>13.1%}")
    paper = record["paper_one_run"]
    lines.append(f"{paper['epsilon']:>12.2f} {'':>8} {paper['epsilon_lower_bound']:>18.2f} {'':>13}  "
                 f"← the paper's number: {paper['source']}")
    return "\n".join(lines)


def report(record: dict) -> str:
    """The lines the command prints after a run."""
    lines = [f"tight, ε = {row['accountant_epsilon']:.2f}: lower bound {row['epsilon']:.2f} (CP), "
             f"{row['epsilon_gdp']:.2f} (GDP; ratio {row['ratio_gdp']:.2f}), {row['wall_seconds']:.0f} s"
             for row in record["tight"]]
    lines += [f"{name}: claims ε = {row['broken']['claimed_epsilon']}, audited ≥ {row['broken']['epsilon']:.2f} "
              f"(caught: {row['caught']}); correct twin ≥ {row['correct']['epsilon']:.2f}"
              for name, row in record["bugs"].items()]
    lines += [f"one run, ε = {row['accountant_epsilon']:.2f}: lower bound {row['one_run_lower_bound']:.2f}, "
              f"test accuracy {row['test_accuracy']:.3f}, {row['wall_seconds']:.0f} s" for row in record["one_run"]]
    return "\n".join(lines)


def build_parser():
    return _driver.build_parser("audit", __doc__.splitlines()[0], quick_help="CI size (< 1 min)",
                                full_help="the notebook's stored results (~20 min on 2 CPU cores)",
                                out_example="dpedu/results/audit_full.json")


def main(argv=None) -> int:
    return _driver.main("audit", build_parser(), argv,
                        lambda args, command: run(CONFIGS[args.mode], args.mode, args.data_dir, command=command),
                        report)


if __name__ == "__main__":
    sys.exit(main())
