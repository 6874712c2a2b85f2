"""Runs membership inference (loss threshold and LiRA) against non-private and DP-SGD models and stores a record.

    python -m dpedu.experiments.membership --quick|--full --out dpedu/results/membership_<mode>.json

One pool of ``pool_examples`` MNIST training images; ``num_models`` models per setting, model ``m``
trained on the half of the pool given by row ``m`` of :func:`dpedu.membership.membership_masks`
(every image in exactly half of the models, every model on exactly half of the pool). Settings
(``epsilons``): non-private (``inf``: minibatch SGD with momentum) and DP-SGD at each finite ε
(δ = ``delta``; Poisson sampling of each model's own examples at rate ``q = L / n``, noise
multiplier calibrated by :func:`dpedu.accounting.calibrate_noise_multiplier` for that ``q`` and
number of steps: the sampler that runs is the sampler accounted). Same architecture
(:class:`dpedu.attacks.SmallMLP`), same data, same masks, same initialisations and the same number
of epochs everywhere; DP-SGD has its own batch size and learning rate (one for every ε).

Each model is attacked in turn with the other ``num_models − 1`` as shadow models
(:func:`dpedu.membership.lira_leave_one_out`: online LiRA, Carlini et al. 2022, with the global
variance they recommend for fewer than 64 shadow models, and with per-example variances), and by
the loss-threshold attack (Yeom et al. 2018); all (model, example) pairs are pooled. The record
holds, per setting: TPR at FPR 0.1 % and 1 % and AUC (``jax_privacy.auditing``), the ROC curves
on a log-spaced FPR grid for a log–log plot, the (ε, δ)-DP bound on the TPR, the models' train
and test accuracy, σ, q, steps, the accountant's ε and wall times; plus the configuration, the
data used and provenance (:func:`dpedu.provenance.record`).

Taught in notebooks/06_auditing.ipynb.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy import stats

from dpedu import accounting, attacks, data, membership, provenance
from dpedu.experiments import _driver
from dpedu.progress import progress

EXPERIMENT = "membership_inference"


@dataclasses.dataclass(frozen=True)
class MembershipConfig:
    """Sizes and hyper-parameters of one run.

    Attributes:
        pool_examples: N, MNIST training images in the pool (even); each model trains on N / 2.
        num_models: M, models per setting (even); each is attacked with the other M − 1 as shadows.
        hidden_units: hidden layer of :class:`dpedu.attacks.SmallMLP` (wide enough to memorise).
        epochs: passes over each model's N / 2 examples, in every setting.
        batch_size: non-private batch size (shuffled, fixed size).
        learning_rate: non-private SGD learning rate.
        dp_expected_batch_size: DP-SGD's expected batch size L (sampling rate q = L / (N / 2)).
        dp_learning_rate: DP-SGD's learning rate (the same for every ε).
        momentum: heavy-ball momentum of both.
        l2_clip_norm: C of DP-SGD.
        epsilons: the settings: ``math.inf`` is non-private training, a finite ε is DP-SGD at (ε, δ).
        delta: δ.
        num_stds: head-room of DP-SGD's padded Poisson batch, in standard deviations.
        clipping_method: how DP-SGD computes its clipped sum (a speed choice; same result).
        test_examples: MNIST test images on which every model's accuracy is measured.
        roc_points: points of each stored ROC curve (log-spaced FPR grid).
        models_per_batch: models trained at once (memory vs speed).
        seed: the one seed every random choice derives from.
    """

    pool_examples: int = 2000
    num_models: int = 128
    hidden_units: int = 256
    epochs: int = 20
    batch_size: int = 50
    learning_rate: float = 0.1
    dp_expected_batch_size: float = 500.0
    dp_learning_rate: float = 0.15
    momentum: float = 0.9
    l2_clip_norm: float = 1.0
    epsilons: tuple[float, ...] = (math.inf, 8.0, 1.0)
    delta: float = 1e-5
    num_stds: float = 6.0
    clipping_method: str = "ghost"
    test_examples: int = 10_000
    roc_points: int = 41
    models_per_batch: int = 8
    seed: int = 0


CONFIGS = {
    "full": MembershipConfig(),
    # The notebook's live run: well under a minute on 2 CPU cores (fewer models, a smaller pool).
    "quick": MembershipConfig(pool_examples=1000, num_models=16, dp_expected_batch_size=250.0, test_examples=1000),
}


def _epsilon_label(epsilon: float):
    return "inf" if math.isinf(epsilon) else epsilon


def downsample_roc(fpr, tpr, grid) -> list[float]:
    """The empirical ROC's TPR at each FPR of ``grid``: that of the last threshold with FPR ≤ the grid
    value (the staircase :func:`dpedu.membership.roc_curve` draws)."""
    index = np.searchsorted(np.asarray(fpr), np.asarray(grid), side="right") - 1
    return np.asarray(tpr)[index].tolist()


def _attack_record(in_scores, out_scores, config: MembershipConfig) -> dict:
    summary = membership.attack_summary(in_scores, out_scores)
    fpr, tpr = membership.roc_curve(in_scores, out_scores)
    grid = np.geomspace(1.0 / len(out_scores), 1.0, config.roc_points)
    return {**summary, "roc": {"fpr": grid.tolist(), "tpr": downsample_roc(fpr, tpr, grid)}}


def _accuracy(logits, labels) -> np.ndarray:
    """Per-model accuracy: ``logits`` ``[M, N, C]``, ``labels`` ``[N]`` → ``[M]``."""
    return np.asarray(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(labels), axis=1))


def run_setting(module, pool_images, pool_labels, test_images, test_labels, masks, keys, epsilon: float,
                config: MembershipConfig) -> dict:
    """Trains the models of one setting, measures them and attacks them; returns the record's row."""
    start = time.perf_counter()
    subset_size = config.pool_examples // 2
    if math.isinf(epsilon):
        dp = {"noise_multiplier": None, "sampling_rate": None, "epsilon_spent": None}
        trained = membership.train_shadow_models(
            module, pool_images, pool_labels, masks, keys, epochs=config.epochs, batch_size=config.batch_size,
            learning_rate=config.learning_rate, momentum=config.momentum, models_per_batch=config.models_per_batch)
    else:
        sampling_rate, steps = membership.poisson_schedule(subset_size, config.dp_expected_batch_size, config.epochs)
        sigma = accounting.calibrate_noise_multiplier(epsilon, sampling_rate, steps, config.delta)
        trained = membership.train_shadow_models(
            module, pool_images, pool_labels, masks, keys, epochs=config.epochs,
            batch_size=config.dp_expected_batch_size, learning_rate=config.dp_learning_rate,
            momentum=config.momentum, l2_clip_norm=config.l2_clip_norm, noise_multiplier=sigma,
            clipping_method=config.clipping_method, num_stds=config.num_stds,
            models_per_batch=config.models_per_batch)
        assert trained.steps == steps and trained.sampling_rate == sampling_rate  # accounted = run
        dp = {"noise_multiplier": sigma, "sampling_rate": sampling_rate,
              "epsilon_spent": accounting.epsilon(sigma, sampling_rate, steps, config.delta)}
    jax.block_until_ready(trained.params)  # JAX dispatches asynchronously: time the training itself
    train_seconds = time.perf_counter() - start
    pool_logits = membership.stacked_logits(module.apply, trained.params, pool_images,
                                            models_per_batch=config.models_per_batch)
    test_logits = membership.stacked_logits(module.apply, trained.params, test_images,
                                            models_per_batch=config.models_per_batch)
    correct = np.asarray(jnp.argmax(pool_logits, -1) == jnp.asarray(pool_labels))
    train_accuracy = np.array([correct[m][masks[m]].mean() for m in range(len(masks))])
    held_out_accuracy = np.array([correct[m][~masks[m]].mean() for m in range(len(masks))])
    test_accuracy = _accuracy(test_logits, test_labels)
    confidence = membership.logit_confidence(pool_logits, pool_labels)
    attacks_ = {
        "lira": _attack_record(*membership.lira_leave_one_out(confidence, masks, global_variance=True), config),
        "lira_per_example_variance": _attack_record(
            *membership.lira_leave_one_out(confidence, masks, global_variance=False), config),
        "loss_threshold": _attack_record(*membership.pool_by_membership(
            membership.loss_threshold_scores(pool_logits, pool_labels), masks), config),
    }
    eps = dp["epsilon_spent"]
    dp_bound = {f"tpr_at_fpr_{f:g}": (None if eps is None else min(1.0, math.exp(eps) * f + config.delta))
                for f in membership.REPORTED_FPRS}
    sizes = trained.batch_sizes
    padded = trained.padded_batch_size
    return {
        "epsilon": _epsilon_label(epsilon),
        "delta": None if math.isinf(epsilon) else config.delta,
        **dp,
        "steps": trained.steps,
        "expected_batch_size": trained.expected_batch_size,
        "padded_batch_size": padded,
        # Chance that one Poisson batch overflows the padded size (which would stop the run).
        "overflow_probability_per_step": (None if trained.sampling_rate is None else
                                          float(stats.binom.sf(padded, subset_size, trained.sampling_rate))),
        "realised_batch_size_mean": float(sizes.mean()),
        "realised_batch_size_std": float(sizes.std()),
        "test_accuracy": float(test_accuracy.mean()),
        "test_accuracy_std": float(test_accuracy.std()),
        "train_accuracy": float(train_accuracy.mean()),
        "held_out_pool_accuracy": float(held_out_accuracy.mean()),
        "dp_tpr_bound": dp_bound,
        **attacks_,
        "train_seconds": train_seconds,
        "wall_seconds": time.perf_counter() - start,
    }


def run(config: MembershipConfig, mode: str, data_dir=None, command: str | None = None) -> dict:
    """Every setting of ``config``; returns the record (with provenance) without writing it.

    ``command``: how the run was started, for the record (default: this process's command line).
    """
    start, start_cpu, load_start = time.perf_counter(), time.process_time(), os.getloadavg()
    dataset = data.load_mnist(data_dir=data_dir, quick=mode == "quick")
    if config.pool_examples > len(dataset.train_labels) or config.test_examples > len(dataset.test_labels):
        raise ValueError(f"{dataset.name} has {len(dataset.train_labels)} training and {len(dataset.test_labels)} "
                         f"test images; the config asks for {config.pool_examples} and {config.test_examples}")
    rng = np.random.default_rng(config.seed)
    pool = np.sort(rng.permutation(len(dataset.train_labels))[: config.pool_examples])
    pool_images, pool_labels = jnp.asarray(dataset.train_images[pool]), jnp.asarray(dataset.train_labels[pool])
    test_images = jnp.asarray(dataset.test_images[: config.test_examples])
    test_labels = jnp.asarray(dataset.test_labels[: config.test_examples])
    masks = membership.membership_masks(config.seed, config.num_models, config.pool_examples)
    # One key per model, the same in every setting: the same initialisations everywhere.
    keys = jax.random.split(jax.random.key(config.seed), config.num_models)
    module = attacks.SmallMLP(config.hidden_units)
    rows = [run_setting(module, pool_images, pool_labels, test_images, test_labels, masks, keys, eps, config)
            for eps in progress(list(config.epsilons), desc="setting")]
    config_dict = dataclasses.asdict(config)
    config_dict["epsilons"] = [_epsilon_label(e) for e in config.epsilons]
    extra = {} if command is None else {"command": command}
    params = attacks.SmallMLP(config.hidden_units).init(jax.random.key(0), pool_images[:1])
    return provenance.record(
        **extra,
        experiment=EXPERIMENT,
        mode=mode,
        data=dataset.name,
        data_source=dataset.source,
        data_notes=dataset.notes,
        pool_indices_sha256=_sha256(pool),
        mechanism=("DP-SGD (dpedu.dpsgd.make_dp_step): Poisson sampling of each model's own N/2 examples at rate "
                   "q = L/(N/2) inside JAX, per-example clipping to C, Gaussian noise σC once per step, division by "
                   "the expected batch size L; ε from dpedu.accounting.epsilon(σ, q, T, δ) (PLD, add/remove one "
                   "example). ε = inf: non-private minibatch SGD with momentum (dpedu.dpsgd.make_nonprivate_step)"),
        attack=("online LiRA (Carlini et al. 2022), leave-one-out over the M models (each attacked with the other "
                "M − 1 as shadows), global variance ('lira') or per-example variances; loss threshold "
                "(Yeom et al. 2018); TPR@FPR and AUC from jax_privacy.auditing.CanaryScoreAuditor (allows "
                "randomising between two thresholds); ROC curves: the empirical ROC (dpedu.membership.roc_curve) "
                "on a log-spaced FPR grid"),
        model="dpedu.attacks.SmallMLP",
        model_parameters=int(ravel_pytree(params)[0].size),
        config=config_dict,
        by_epsilon=rows,
        seed=config.seed,
        wall_seconds=time.perf_counter() - start,
        # On a shared machine wall time depends on the other jobs: CPU time (all threads) and the
        # 1-minute load average at start and end say how much of it was this run's.
        cpu_seconds=time.process_time() - start_cpu,
        load_average=[load_start[0], os.getloadavg()[0]],
        cpu_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    )


def _sha256(indices) -> str:
    import hashlib

    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def load_results(mode: str = "full", results_dir=None) -> dict | None:
    """The stored record ``membership_<mode>.json`` shipped with dpedu, or None if not run yet.

    Args:
      mode: ``"quick"`` or ``"full"``.
      results_dir: where to look (default: :data:`dpedu.provenance.RESULTS_DIR`).

    Taught in notebooks/06_auditing.ipynb.
    """
    return _driver.load_results("membership", mode, CONFIGS, results_dir)


def _setting_name(row: dict) -> str:
    return "non-private" if row["epsilon"] == "inf" else f"DP-SGD, ε = {row['epsilon']:g}"


def summary_table(record: dict) -> str:
    """The record's attacks as a text table: accuracy, then LiRA and the loss attack per setting.

    Taught in notebooks/06_auditing.ipynb.
    """
    config = record["config"]
    lines = [f"{record['data']}: {config['num_models']} models, each on {config['pool_examples'] // 2} of "
             f"{config['pool_examples']} images (stored run, commit {record['git_commit'][:8]})",
             f"{'setting':<18} {'test acc':>8} {'LiRA TPR@0.1%':>13} {'TPR@1%':>7} {'AUC':>5} "
             f"{'loss TPR@0.1%':>13} {'AUC':>5} {'DP allows TPR@0.1% ≤':>21}"]
    for row in record["by_epsilon"]:
        lira, loss = row["lira"], row["loss_threshold"]
        bound = row["dp_tpr_bound"]["tpr_at_fpr_0.001"]
        lines.append(f"{_setting_name(row):<18} {row['test_accuracy']:>8.1%} {lira['tpr_at_fpr_0.001']:>13.2%} "
                     f"{lira['tpr_at_fpr_0.01']:>7.1%} {lira['auc']:>5.3f} {loss['tpr_at_fpr_0.001']:>13.2%} "
                     f"{loss['auc']:>5.3f} {'—' if bound is None else f'{bound:.2%}':>21}")
    return "\n".join(lines)


def plot_roc(record: dict, ax=None):
    """LiRA's ROC curve of each setting on log–log axes, with chance (Carlini et al. 2022's plot).

    Taught in notebooks/06_auditing.ipynb.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        ax = plt.subplots(figsize=(5, 4))[1]
    for row in record["by_epsilon"]:
        roc = row["lira"]["roc"]
        ax.loglog(roc["fpr"], np.maximum(roc["tpr"], 1e-5), drawstyle="steps-post",
                  label=f"{_setting_name(row)} (AUC {row['lira']['auc']:.2f})")
    low = min(row["lira"]["roc"]["fpr"][0] for row in record["by_epsilon"])
    ax.loglog([low, 1], [low, 1], "k:", label="chance")
    ax.set(xlim=(low, 1), ylim=(low, 1), xlabel="false-positive rate", ylabel="true-positive rate",
           title=f"LiRA, stored run ({record['data']})")
    ax.legend(fontsize=8)
    return ax


def report(record: dict) -> str:
    """The lines the command prints after a run."""
    lines = []
    for row in record["by_epsilon"]:
        lira, loss = row["lira"], row["loss_threshold"]
        sigma = "-" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:.2f}"
        lines.append(f"ε = {row['epsilon']} (σ {sigma}): test accuracy {row['test_accuracy']:.3f}, train "
                     f"{row['train_accuracy']:.3f}; LiRA TPR@0.1% {lira['tpr_at_fpr_0.001']:.4f}, TPR@1% "
                     f"{lira['tpr_at_fpr_0.01']:.4f}, AUC {lira['auc']:.3f}; loss threshold TPR@0.1% "
                     f"{loss['tpr_at_fpr_0.001']:.4f}, AUC {loss['auc']:.3f}; {row['wall_seconds']:.0f} s")
    return "\n".join([*lines, record["data"]])


def build_parser():
    return _driver.build_parser("membership", __doc__.splitlines()[0],
                                quick_help="the notebook's live size (< 1 min on 2 CPU cores)",
                                full_help="the notebook's stored results (~5 min on 2 CPU cores)",
                                out_example="dpedu/results/membership_full.json")


def main(argv=None) -> int:
    return _driver.main("membership", build_parser(), argv,
                        lambda args, command: run(CONFIGS[args.mode], args.mode, args.data_dir, command=command),
                        report)


if __name__ == "__main__":
    sys.exit(main())
