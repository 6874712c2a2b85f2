"""Runs the informed-adversary reconstruction attacks (Balle, Cherubin & Hayes 2022) and stores a record.

    python -m dpedu.experiments.attack --quick|--full --out dpedu/results/attack_<mode>.json

Two experiments on MNIST, both by :mod:`dpedu.attacks`:

1. convex: softmax regression trained to its optimum on ``glm_examples`` images; the closed-form
   attack reconstructs several of them, each time knowing all the others;
2. neural network: for each ε in ``epsilons`` (``inf`` = non-private), small MLPs trained on ``D⁻``
   plus one image each, by full-batch DP gradient descent at the σ calibrated for that ε
   (sampling rate 1, accounted as exactly that), and ``trials`` released target models (more at
   the small ε, where the comparison with the bound needs tight intervals), each missing one
   image drawn uniformly from its own prior set of ``prior_size`` images the reconstructor never
   saw. Two attacks on every one of them:

   * learned (Balle, Cherubin & Hayes 2022): ``shadow_models`` shadow models train a
     reconstructor network; success when its reconstruction is nearest the true image among the
     prior set;
   * prior-aware: the adversary also knows the prior set, simulates the noiseless training run
     for each candidate and names the candidate whose model is nearest the released one (the
     kind of attack Hayes, Mahloujifar & Balle 2023 use to test their bound). The simulation
     does not depend on the trial, so each distinct candidate is simulated once.

The record holds every number the notebook shows (success rates with 95 % Clopper–Pearson
intervals, mean squared errors, the DP bounds, model accuracy), a few reconstructions (hex-encoded
uint8 pixels, :func:`decode_images`), the configuration and provenance (:func:`dpedu.provenance.record`).

Taught in notebooks/05_reconstruction_attack.ipynb.
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

from dpedu import accounting, attacks, auditing, data, provenance
from dpedu.experiments import _driver
from dpedu.progress import progress

EXPERIMENT = "reconstruction_attack"
# Full-batch training: every example is in every step, so the accounting is for sampling rate 1
# (T compositions of the Gaussian mechanism, no amplification by subsampling).
SAMPLING_RATE = 1.0


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Sizes and hyper-parameters of one run of both attacks.

    Attributes:
        glm_examples: n, the training set of the convex model.
        glm_targets: how many of its examples the convex attack reconstructs (one at a time).
        glm_l2_regularization: λ of the convex model.
        known_examples: |D⁻|, the examples the adversary knows (the released model sees n = |D⁻| + 1).
        hidden_units: hidden layer of the released MLP (:class:`dpedu.attacks.SmallMLP`).
        steps: full-batch gradient steps T.
        learning_rate: SGD learning rate of the released model.
        l2_clip_norm: per-example clipping norm C of DP training.
        epsilons: privacy budgets to attack (``math.inf``: non-private training).
        delta: δ of every ε.
        shadow_models: K, shadow models per ε (the reconstructor's training set).
        trials: attacked target models at each ε of ``epsilons`` (same length); trial ``t``
            has the same prior set and missing image at every ε that has more than ``t`` trials.
        prior_size: m, candidates in each target's prior set (chance level 1/m).
        reconstructor_hidden_units, reconstructor_epochs, reconstructor_batch_size,
        reconstructor_learning_rate: the reconstructor network and its training.
        stored_examples: reconstructions kept in the record per ε (for the notebook's grid).
        test_examples: MNIST test images used to measure the released models' accuracy.
        accuracy_models: target models per ε whose test accuracy is measured.
        models_per_batch: models trained at once (memory vs speed).
        seed: the one seed every random choice derives from.
    """

    glm_examples: int = 100
    glm_targets: int = 10
    glm_l2_regularization: float = 1.0
    known_examples: int = 63
    hidden_units: int = 16
    steps: int = 40
    learning_rate: float = 0.5
    l2_clip_norm: float = 1.0
    epsilons: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, math.inf)
    delta: float = 1e-5
    shadow_models: int = 1000
    trials: tuple[int, ...] = (1000, 1000, 200, 200, 200)
    prior_size: int = 10
    reconstructor_hidden_units: int = 256
    reconstructor_epochs: int = 20
    reconstructor_batch_size: int = 64
    reconstructor_learning_rate: float = 1e-3
    stored_examples: int = 8
    test_examples: int = 2000
    accuracy_models: int = 20
    models_per_batch: int = 64
    seed: int = 0


CONFIGS = {
    "full": AttackConfig(),
    # CI and the notebook's live run: about a minute on 2 CPU cores (fewer models; ε = 10 and non-private).
    "quick": AttackConfig(glm_targets=3, shadow_models=200, epsilons=(10.0, math.inf), trials=(40, 40),
                          accuracy_models=5, test_examples=500),
}


def encode_images(images) -> list[str]:
    """Images in [0, 1] as one hex string each of their 0..255 pixel bytes (compact, exact JSON)."""
    pixels = np.clip(np.rint(np.asarray(images) * 255), 0, 255).astype(np.uint8)
    return [image.tobytes().hex() for image in pixels]


def decode_images(strings, shape=(28, 28, 1)) -> np.ndarray:
    """The inverse of :func:`encode_images`: ``[len(strings), *shape]`` float32 images in [0, 1].

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """
    pixels = [np.frombuffer(bytes.fromhex(text), dtype=np.uint8).reshape(shape) for text in strings]
    return np.stack(pixels).astype(np.float32) / 255


def split_data(dataset: data.Dataset, config: AttackConfig) -> dict:
    """Disjoint index sets of the MNIST training images, all drawn with ``config.seed``.

    ``known`` (D⁻), ``shadow`` (the adversary's candidates, one per shadow model) and ``pool``
    (images the reconstructor never sees, from which each trial's prior set is drawn), plus the
    prior sets ``priors`` ``[trials, m]`` (indices into ``pool``; ``trials`` the largest of
    ``config.trials``) and ``target_position`` ``[trials]``, uniform in ``[0, m)``: the missing
    image of trial ``t`` is ``pool[priors[t, target_position[t]]]``. ``glm`` is the convex model's
    training set.

    Raises:
        ValueError: ``config.trials`` and ``config.epsilons`` of different lengths.
    """
    if len(config.trials) != len(config.epsilons) or min(config.trials) < 1:
        raise ValueError(f"trials must give one count >= 1 per epsilon ({len(config.epsilons)}), got {config.trials}")
    trials = max(config.trials)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(dataset.train_labels))
    pool_size = max(10 * config.prior_size, 1000)
    cuts = np.cumsum([config.known_examples, config.shadow_models, pool_size])
    known, shadow, pool = np.split(order[: cuts[-1]], cuts[:-1])
    priors = np.stack([rng.choice(pool_size, config.prior_size, replace=False) for _ in range(trials)])
    target_position = rng.integers(0, config.prior_size, trials)
    glm = rng.choice(len(dataset.train_labels), config.glm_examples, replace=False)
    return {"known": known, "shadow": shadow, "pool": pool, "priors": priors,
            "target_position": target_position, "glm": glm}


def run_convex(dataset: data.Dataset, split: dict, config: AttackConfig) -> dict:
    """Trains softmax regression to its optimum, then reconstructs ``glm_targets`` of its examples."""
    images = dataset.train_images[split["glm"]].reshape(config.glm_examples, -1)
    labels = dataset.train_labels[split["glm"]]
    start = time.perf_counter()
    params, gradient_norm = attacks.train_softmax_regression(images, labels, config.glm_l2_regularization)
    rows = []
    for target in range(config.glm_targets):
        known = np.arange(config.glm_examples) != target
        image, label = attacks.glm_reconstruct(params, images[known], labels[known], config.glm_l2_regularization)
        rows.append({"target": target, "mse": float(np.mean((image - images[target]) ** 2)),
                     "label": label, "true_label": int(labels[target])})
    return {"examples": config.glm_examples, "l2_regularization": config.glm_l2_regularization,
            "gradient_norm": gradient_norm, "targets": rows,
            "max_mse": max(r["mse"] for r in rows),
            "labels_correct": sum(r["label"] == r["true_label"] for r in rows),
            "wall_seconds": time.perf_counter() - start}


def _accuracy(module, unravel, flat_params, images, labels) -> float:
    logits = jax.vmap(lambda p: module.apply(unravel(p), images))(flat_params)
    return float(jnp.mean(jnp.argmax(logits, -1) == labels))


def _rate(success: np.ndarray) -> dict:
    successes = int(np.sum(success))
    return {"success_rate": successes / len(success), "success_ci95": [float(v) for v in auditing.clopper_pearson(successes, len(success))],
            "successes": successes, "trials": len(success)}


class AttackSetting:
    """What every run at every ε shares: the released model, its initialisation, ``D⁻``, the
    trials' targets and candidates."""

    def __init__(self, dataset: data.Dataset, split: dict, config: AttackConfig):
        self.config = config
        self.images, self.labels = dataset.train_images, dataset.train_labels
        self.module = attacks.SmallMLP(config.hidden_units)
        self.init_params = self.module.init(jax.random.key(config.seed), jnp.zeros((1, *self.images.shape[1:])))
        self.unravel = ravel_pytree(self.init_params)[1]
        self.shadow = split["shadow"]
        self.candidates = split["pool"][split["priors"]]  # [trials, m] MNIST indices
        self.target_position = split["target_position"]
        self.target = self.candidates[np.arange(len(self.candidates)), self.target_position]
        self.known = split["known"]
        self.test_images = jnp.asarray(dataset.test_images[: config.test_examples])
        self.test_labels = jnp.asarray(dataset.test_labels[: config.test_examples])

    def train(self, index, keys, *, l2_clip_norm, noise_multiplier):
        """Models trained on D⁻ plus each of the MNIST examples ``index``."""
        c = self.config
        return attacks.train_models(
            attacks.cross_entropy_loss(self.module), self.init_params, self.images[self.known],
            self.labels[self.known], self.images[index], self.labels[index], keys, steps=c.steps,
            learning_rate=c.learning_rate, l2_clip_norm=l2_clip_norm, noise_multiplier=noise_multiplier,
            models_per_batch=c.models_per_batch)


@dataclasses.dataclass(frozen=True)
class SimulatedCandidates:
    """The prior-aware adversary's noiseless models of the first trials' candidates.

    Attributes:
        models: ``[U, P]`` one flattened model per distinct candidate image.
        index: ``[trials, m]`` the row of ``models`` of each trial's candidates:
            ``models[index]`` is the ``[trials, m, P]`` stack :func:`dpedu.attacks.nearest_candidate`
            takes (built a chunk of trials at a time by :func:`prior_aware_guesses`: it is large).
    """

    models: np.ndarray
    index: np.ndarray


def simulate_candidates(setting: AttackSetting, private: bool, trials: int) -> SimulatedCandidates:
    """The noiseless training run of every candidate of the first ``trials`` trials, each distinct
    image once (trials share images of the pool). ``private``: clipped as DP training is (without
    its noise); otherwise the non-private algorithm (then exactly the released model)."""
    c = setting.config
    distinct, index = np.unique(setting.candidates[:trials], return_inverse=True)
    keys = jax.random.split(jax.random.key(0), len(distinct))  # unused: no noise
    models = setting.train(distinct, keys, l2_clip_norm=c.l2_clip_norm if private else None,
                           noise_multiplier=0.0 if private else None)
    return SimulatedCandidates(np.asarray(models), index.reshape(trials, c.prior_size))


def prior_aware_guesses(released, simulated: SimulatedCandidates, chunk: int = 100) -> np.ndarray:
    """:func:`dpedu.attacks.nearest_candidate` of released model ``t`` (trial ``t``) among trial
    ``t``'s simulated candidates, ``chunk`` trials at a time (the whole ``[trials, m, P]`` stack
    would take GBs)."""
    released = np.asarray(released)
    bounds = [(start, min(start + chunk, len(released))) for start in range(0, len(released), chunk)]
    return np.concatenate([attacks.nearest_candidate(released[start:end], simulated.models[simulated.index[start:end]])
                           for start, end in bounds])


def run_epsilon(setting: AttackSetting, epsilon: float, trials: int, key: jax.Array,
                simulated: SimulatedCandidates) -> dict:
    """Both attacks on the first ``trials`` trials' models trained at one ε (``inf``: non-private);
    returns the record's row."""
    start = time.perf_counter()
    c = setting.config
    images = setting.images
    target, target_position = setting.target[:trials], setting.target_position[:trials]
    candidate_images = images[setting.candidates[:trials]]
    if math.isinf(epsilon):
        clip = noise_multiplier = spent_epsilon = None
    else:
        clip = c.l2_clip_norm
        noise_multiplier = accounting.calibrate_noise_multiplier(epsilon, SAMPLING_RATE, c.steps, c.delta)
        spent_epsilon = accounting.epsilon(noise_multiplier, SAMPLING_RATE, c.steps, c.delta)
    shadow_key, reconstructor_key, target_key = jax.random.split(key, 3)
    shadows = setting.train(setting.shadow, jax.random.split(shadow_key, c.shadow_models),
                            l2_clip_norm=clip, noise_multiplier=noise_multiplier)
    shadows.block_until_ready()  # JAX dispatches asynchronously: wait, so the timing is the training's
    shadow_seconds = time.perf_counter() - start
    reconstructor = attacks.train_reconstructor(
        shadows, images[setting.shadow], reconstructor_key, hidden_units=c.reconstructor_hidden_units,
        epochs=c.reconstructor_epochs, batch_size=c.reconstructor_batch_size,
        learning_rate=c.reconstructor_learning_rate)
    released = setting.train(target, jax.random.split(target_key, trials),
                             l2_clip_norm=clip, noise_multiplier=noise_multiplier)
    reconstructions = np.asarray(reconstructor(released))
    guesses = attacks.nearest_candidate(reconstructions, candidate_images)
    errors = np.mean((reconstructions - images[target]).reshape(trials, -1) ** 2, axis=1)
    # What an MSE means: the error of always answering the average shadow image (no attack at all).
    mean_image = images[setting.shadow].mean(0)
    mean_image_errors = np.mean((mean_image - images[target]).reshape(trials, -1) ** 2, axis=1)
    prior_guesses = prior_aware_guesses(released, simulated)
    shown = np.arange(c.stored_examples)
    return {
        "epsilon": "inf" if math.isinf(epsilon) else epsilon,
        "epsilon_spent": spent_epsilon,
        "noise_multiplier": noise_multiplier,
        "sampling_rate": SAMPLING_RATE,
        "chance": 1 / c.prior_size,
        "dp_bound": None if noise_multiplier is None else attacks.dp_success_bound(spent_epsilon, c.delta, c.prior_size),
        "gaussian_bound": None if noise_multiplier is None else attacks.gaussian_success_bound(
            noise_multiplier, c.steps, c.prior_size),
        "learned": {**_rate(guesses == target_position),
                    "mse_mean": float(errors.mean()), "mse_median": float(np.median(errors)),
                    "mean_image_mse": float(mean_image_errors.mean())},
        "prior_aware": _rate(prior_guesses == target_position),
        "test_accuracy": _accuracy(setting.module, setting.unravel, released[: c.accuracy_models],
                                   setting.test_images, setting.test_labels),
        "examples": {
            "target": encode_images(images[target[shown]]),
            "reconstruction": encode_images(reconstructions[shown]),
            "nearest_candidate": encode_images(candidate_images[shown, guesses[shown]]),
            "success": (guesses[shown] == target_position[shown]).tolist(),
            "prior_aware_guess": encode_images(candidate_images[shown, prior_guesses[shown]]),
        },
        "shadow_seconds": shadow_seconds,
        "wall_seconds": time.perf_counter() - start,
    }


def run(config: AttackConfig, mode: str, data_dir=None, command: str | None = None) -> dict:
    """Both experiments for ``config``; returns the record (with provenance) without writing it.

    ``command``: how the run was started, for the record (default: this process's command line).
    """
    start, start_cpu, load_start = time.perf_counter(), time.process_time(), os.getloadavg()
    dataset = data.load_mnist("official", data_dir)
    split = split_data(dataset, config)
    convex = run_convex(dataset, split, config)
    setting = AttackSetting(dataset, split, config)
    # One simulation per training algorithm (clipped for every finite ε, plain for ε = inf),
    # covering the most trials any ε of that algorithm attacks.
    most_trials = {}
    for eps, trials in zip(config.epsilons, config.trials):
        most_trials[not math.isinf(eps)] = max(trials, most_trials.get(not math.isinf(eps), 0))
    simulated = {private: simulate_candidates(setting, private, trials) for private, trials in most_trials.items()}
    keys = jax.random.split(jax.random.key(config.seed + 1), len(config.epsilons))
    rows = [run_epsilon(setting, eps, trials, key, simulated[not math.isinf(eps)])
            for eps, trials, key in progress(list(zip(config.epsilons, config.trials, keys)), desc="ε")]
    config_dict = dataclasses.asdict(config)
    config_dict["epsilons"] = ["inf" if math.isinf(e) else e for e in config.epsilons]
    extra = {} if command is None else {"command": command}
    return provenance.record(
        **extra,
        experiment=EXPERIMENT,
        mode=mode,
        data=dataset.name,
        mechanism=("full-batch DP gradient descent (sampling rate 1: every example in every step), "
                   "per-example clipping, Gaussian noise once per step (dpedu.dpsgd.make_dp_step); "
                   "ε from dpedu.accounting.epsilon(σ, 1.0, T, δ) (PLD, add/remove one example); "
                   "ε = inf: non-private full-batch gradient descent (dpedu.dpsgd.make_nonprivate_step)"),
        model="dpedu.attacks.SmallMLP",
        model_parameters=int(ravel_pytree(setting.init_params)[0].size),
        config=config_dict,
        convex=convex,
        by_epsilon=rows,
        seed=config.seed,
        wall_seconds=time.perf_counter() - start,
        # On a shared machine wall time depends on the other jobs: CPU time (all threads) and the
        # 1-minute load average at start and end say how much of it was this run's.
        cpu_seconds=time.process_time() - start_cpu,
        load_average=[load_start[0], os.getloadavg()[0]],
        cpu_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    )


def load_results(mode: str = "full", results_dir=None) -> dict | None:
    """The stored record ``attack_<mode>.json`` shipped with dpedu, or None if not run yet.

    Args:
      mode: ``"quick"`` or ``"full"``.
      results_dir: where to look (default: :data:`dpedu.provenance.RESULTS_DIR`).

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """
    return _driver.load_results("attack", mode, CONFIGS, results_dir)


def report(record: dict) -> str:
    """The lines the command prints after a run."""
    lines = [f"ε = {row['epsilon']}: learned attack success {row['learned']['success_rate']:.3f}, prior-aware "
             f"{row['prior_aware']['success_rate']:.3f} (chance {row['chance']:.3f}, bound {row['gaussian_bound']}), "
             f"MSE {row['learned']['mse_mean']:.4f}, accuracy {row['test_accuracy']:.3f}, {row['wall_seconds']:.0f} s"
             for row in record["by_epsilon"]]
    return "\n".join([*lines, f"convex: max MSE {record['convex']['max_mse']:.2e}"])


def build_parser():
    return _driver.build_parser("attack", __doc__.splitlines()[0], quick_help="CI size (< 1 min)",
                                full_help="the notebook's stored results (~7 min on 2 CPU cores)",
                                out_example="dpedu/results/attack_full.json")


def main(argv=None) -> int:
    return _driver.main("attack", build_parser(), argv,
                        lambda args, command: run(CONFIGS[args.mode], args.mode, args.data_dir, command=command),
                        report)


if __name__ == "__main__":
    sys.exit(main())
