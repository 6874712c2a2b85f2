"""Training a :class:`~dpedu.configs.TrainConfig` with DP-SGD, and the JSON record of the run.

The loop is Abadi et al. 2016's Algorithm 1 as the library's pieces implement it:

1. load the data the config names (never other data: a missing file is a ``DataError``);
2. for the MNIST MLP, learn the input projection: DP-PCA (:mod:`dpedu.pca`, its cost composed into
   ε) or an exact PCA of held-out "public" images that are then not trained on;
3. calibrate σ so that the mechanism that will run — Poisson sampling with rate
   ``q = batch_size / N`` for ``T = round(epochs / q)`` steps (or shuffled batches, accounted as
   such), composed with the DP-PCA — meets ``target_epsilon`` at ``delta``;
4. each step: a Poisson batch (:mod:`dpedu.sampling`), padded to micro-batches, K augmented copies
   per example if ``augmult`` (:mod:`dpedu.augment`), the jitted DP-SGD step
   (:func:`dpedu.dpsgd.make_dp_step`) with an optax optimiser, and the parameter EMA
   (:mod:`dpedu.averaging`) if ``ema``;
5. after each epoch, test accuracy and ε so far; at the end, the record
   (:func:`dpedu.provenance.record`) with ε of the whole mechanism that ran.

What a record releases beyond ε. The mechanism's randomness (which examples are sampled, the
Gaussian noise, the DP-PCA's noise) is drawn by default from a *secret* seed, taken from the
operating system's CSPRNG (``os.urandom``) and never stored: DP assumes the noise is unknown to
whoever sees the output, and anyone who can regenerate it can subtract it (Opacus calls the same
precaution "secure mode"). ``train(..., noise_seed=k)`` replays a run exactly, for teaching and
tests; the record then says ``"noise_seed_published": true`` with a warning. ``config.seed`` only
seeds the initialisation and the augmentations, which do not depend on the data. The record's
``non_private_diagnostics`` (mean batch size, fraction of clipped gradients) are exact functions of
the private data, computed without noise: they are NOT covered by ε and are for debugging, not for
release. Records made before these changes (``dpedu/results/``) published both their seed and
these diagnostics at the top level (:func:`diagnostics` reads either form).

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dpedu import _memory, accounting, augment, averaging, checkpoint, data, dpsgd, ghost, models, pca, sampling
from dpedu.configs import TrainConfig, get_config

# Public, data-independent input normalisation, as Tramèr & Boneh's code does it: none for MNIST
# (pixels in [0, 1]); ImageNet's channel means and standard deviations for CIFAR-10 (statistics of
# the private training set would themselves need a privacy budget).
_INPUT_NORMALIZATION = {"cifar10": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
_EVAL_BATCH = 250  # examples per evaluation call: larger batches cost memory (Binder has 2 GB), not accuracy

NON_PRIVATE_DIAGNOSTICS_NOTE = (
    "exact functions of the private training data, computed without noise: NOT covered by epsilon; "
    "for debugging only, not part of the private release")
PUBLISHED_NOISE_SEED_WARNING = (
    "the seed of the sampling and noise randomness is published: anyone holding this record can "
    "regenerate the noise, so the run is replayable for teaching and tests but its epsilon does NOT "
    "hold for a real release; train with noise_seed=None (the default) for a secret seed")


def _secret_seed() -> int:
    """128 bits from the operating system's CSPRNG (``os.urandom``); never stored or returned to the user."""
    return int.from_bytes(os.urandom(16), "little")


def _noise_key(seed: int, published: bool):
    """The JAX key of the Gaussian noise: exactly the old derivation for a published seed (replay)."""
    if published:
        return jax.random.split(jax.random.key(seed))[0]
    words = np.frombuffer(seed.to_bytes(16, "little"), dtype=np.uint32)[:2]
    return jax.random.wrap_key_data(words.copy(), impl="threefry2x32")


def diagnostics(record: dict) -> dict:
    """The non-private training diagnostics of a record: ``mean_batch_size``, ``mean_clipped_fraction``.

    Read from ``record["non_private_diagnostics"]``, or, in records made before that key existed
    (such as the stored ones in ``dpedu/results/``), from the record's top level. These values are
    exact functions of the private data and are NOT covered by the record's ε.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    if "non_private_diagnostics" in record:
        return record["non_private_diagnostics"]
    return {key: record.get(key) for key in ("mean_batch_size", "mean_clipped_fraction")}


def noise_seed_published(record: dict) -> bool:
    """Whether anyone holding ``record`` can regenerate its sampling and noise randomness.

    True when the record says so, and for records made before the noise seed became secret by
    default (they have no ``noise_seed_published`` key: their ``seed`` drove everything).

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    return bool(record.get("noise_seed_published", True))


def _load(config: TrainConfig, data_dir, dataset: data.Dataset | None) -> data.Dataset:
    if dataset is None:
        loader = {"mnist": data.load_mnist, "cifar10": data.load_cifar10}[config.dataset]
        # A quick variant may fall back to a labelled sample offline; a full run never does.
        dataset = loader(source=config.source or "auto", data_dir=data_dir, quick=config.quick)
    if config.train_examples is not None or config.test_examples is not None:
        dataset = data.subset(
            dataset, config.train_examples or len(dataset.train_labels),
            config.test_examples or len(dataset.test_labels), seed=0,
        )
    if config.dataset in _INPUT_NORMALIZATION:
        mean, std = _INPUT_NORMALIZATION[config.dataset]
        dataset = dataset._replace(train_images=data.standardize(dataset.train_images, mean, std),
                                   test_images=data.standardize(dataset.test_images, mean, std))
    return dataset


def _project(config: TrainConfig, dataset: data.Dataset, rng: np.random.Generator):
    """Abadi et al.'s PCA input layer: ``(train_x, train_y, test_x, pca_record)``."""
    train_x, train_y, test_x = dataset.train_images, dataset.train_labels, dataset.test_images
    if config.pca is None:
        return train_x, train_y, test_x, None
    if config.pca == "dp":
        projection = pca.dp_pca_projection(train_x, config.pca_dims, config.pca_noise_multiplier, rng)
        info = {"kind": "dp", "dims": config.pca_dims, "noise_multiplier": config.pca_noise_multiplier,
                "examples": len(train_y), "note": "DP-PCA on the training images; its cost is in epsilon"}
    else:
        if config.public_examples >= len(train_y):
            raise ValueError(f"public_examples must be < the {len(train_y)} training examples, "
                             f"got {config.public_examples}")
        public = slice(len(train_y) - config.public_examples, None)
        projection = pca.dp_pca_projection(train_x[public], config.pca_dims, 0.0, rng)
        train_x, train_y = train_x[: public.start], train_y[: public.start]
        info = {"kind": "public", "dims": config.pca_dims, "examples": config.public_examples,
                "note": (f"exact PCA of the last {config.public_examples} training images, treated "
                         "as public and NOT trained on; epsilon covers the other training examples")}
    return pca.project(train_x, projection), train_y, pca.project(test_x, projection), info


def _training_event(config: TrainConfig, sigma: float, q: float, steps: int, num_examples: int):
    """The DpEvent of what ran: DP-SGD with the config's sampler, after DP-PCA if any."""
    event = accounting.dp_event(sigma, q, steps, sampler=config.sampler, num_examples=num_examples)
    return pca.composed_dp_event(config.pca_noise_multiplier, event) if config.pca == "dp" else event


class _EpsilonSoFar:
    """ε of the steps taken so far, for the per-epoch history, cheaply and as a valid upper bound.

    Recomputing ε of the whole event so far costs 0.5–0.8 s per epoch with PLD, almost all of it
    building the subsampled Gaussian's privacy-loss distribution. For Poisson sampling accounted
    with PLD, that one-step PLD is built once (as dp-accounting's ``PLDAccountant`` builds it:
    pessimistic, add/remove neighbours, the same discretisation) and the steps since the last call
    are composed onto a running PLD (self-compositions cached by step count), about 0.1 s per
    epoch. Composing pessimistic PLDs gives a pessimistic PLD (dp-accounting's guarantee), so
    every value is an upper bound on ε of the steps taken (it may differ from the one-shot value in
    the last digits). The final ε of the record is computed one-shot from the whole event, as the
    calibration did. Other samplers and accountants recompute the event (cheap for them).
    """

    def __init__(self, config: TrainConfig, sigma: float, q: float, num_examples: int):
        self._config, self._sigma, self._q, self._num_examples = config, sigma, q, num_examples
        self._running, self._steps_done, self._pieces = None, 0, {}
        self._incremental = config.sampler == "poisson" and config.accountant == "pld"
        if self._incremental:
            from dp_accounting.pld import privacy_loss_distribution as pld

            interval = accounting.PLD_VALUE_DISCRETIZATION
            self._one_step = pld.from_gaussian_mechanism(sigma, value_discretization_interval=interval,
                                                         sampling_prob=q)
            if config.pca == "dp":
                self._running = pld.from_gaussian_mechanism(config.pca_noise_multiplier,
                                                            value_discretization_interval=interval)

    def __call__(self, steps: int) -> float:
        config = self._config
        if not self._incremental:
            event = _training_event(config, self._sigma, self._q, steps, self._num_examples)
            return accounting.epsilon_for_event(event, config.delta, config.accountant)
        new_steps = steps - self._steps_done
        if new_steps not in self._pieces:
            self._pieces[new_steps] = self._one_step.self_compose(new_steps)
        piece = self._pieces[new_steps]
        self._running = piece if self._running is None else self._running.compose(piece)
        self._steps_done = steps
        return float(self._running.get_epsilon_for_delta(config.delta))


def _check_pca_budget(config: TrainConfig) -> None:
    """ValueError if the DP-PCA alone already spends the target ε (nothing left for training)."""
    if config.private and config.pca == "dp":
        event = pca.pca_dp_event(config.pca_noise_multiplier)
        pca_epsilon = accounting.epsilon_for_event(event, config.delta, config.accountant)
        if pca_epsilon >= config.target_epsilon:
            raise ValueError(f"target_epsilon={config.target_epsilon} is already spent by the DP-PCA alone "
                             f"(epsilon {pca_epsilon:.3g} with pca_noise_multiplier={config.pca_noise_multiplier}); "
                             "raise target_epsilon or pca_noise_multiplier")


def _calibrate(config: TrainConfig, q: float, steps: int, num_examples: int) -> float:
    """Smallest σ (to 1 %) for which :func:`_training_event` meets the target ε at δ under the
    calibration accountant (RDP's ε is never below PLD's, so an RDP σ also meets it under PLD)."""
    accountant = config.calibration_accountant or config.accountant
    # Composition with DP-PCA and shuffled-batch accounting only raise ε, so σ for plain Poisson
    # DP-SGD is a lower bound; it is also the answer when neither applies. Every check uses the
    # event that will be reported.
    plain = accounting.calibrate_noise_multiplier(config.target_epsilon, q, steps, config.delta, accountant)
    return accounting.calibrate_noise_multiplier_for_event(
        lambda sigma: _training_event(config, sigma, q, steps, num_examples), config.target_epsilon,
        config.delta, accountant, lower_bound=plain)


def _describe_model(config: TrainConfig) -> str:
    """The registered model's description, or, when the config overrides the normalisation or
    weight standardisation (Wide-ResNets only), a description of the model that actually ran."""
    description = models.get_model(config.model).description
    if not config.model_overrides():
        return description
    module = models.get_model(config.model).make(**config.model_overrides())
    norm = f"GroupNorm({module.groups})" if module.norm == "group" else "no normalisation"
    standardisation = "weight standardisation" if module.weight_standardization else "no weight standardisation"
    return f"{description.split(':')[0]}: {norm} + {standardisation} (config overrides {config.model_overrides()})"


def _optimizer(config: TrainConfig, q: float, steps: int) -> optax.GradientTransformation:
    if config.lr_schedule == "linear":  # Abadi et al.: lr -> lr_end over lr_decay_epochs, then flat
        lr = optax.linear_schedule(config.lr, config.lr_end, max(1, round(config.lr_decay_epochs / q)))
    elif config.lr_schedule == "cosine":
        lr = optax.cosine_decay_schedule(config.lr, steps)
    else:
        lr = config.lr
    if config.optimizer == "adam":
        return optax.adam(lr)
    return optax.sgd(lr, momentum=config.momentum if config.optimizer == "momentum" else None)


def _batches(config: TrainConfig, rng: np.random.Generator, num_examples: int, q: float, steps: int):
    """``steps`` index arrays: Poisson batches (rate q), or fixed-size batches of shuffled epochs."""
    if config.sampler == "poisson":
        for _ in range(steps):
            yield sampling.poisson_batch_indices(rng, num_examples, q)
        return
    done = 0
    while done < steps:
        for batch in sampling.shuffled_batches(rng, num_examples, config.batch_size):
            yield batch
            done += 1
            if done == steps:
                return


def evaluate(module, params, images: np.ndarray, labels: np.ndarray, batch_size: int = _EVAL_BATCH) -> dict:
    """Test accuracy and mean cross-entropy of ``module`` with ``params``, jitted, in fixed batches.

    The last batch is padded (and masked), so one compiled shape serves the whole set.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    apply = _eval_fn(module)
    batch_size = min(batch_size, len(labels))
    correct, loss = 0.0, 0.0
    for start in range(0, len(labels), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        n = len(y)
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros(batch_size - n, y.dtype)])
        c, l_sum = apply(params, x, y, np.arange(batch_size) < n)
        correct, loss = correct + float(c), loss + float(l_sum)
    return {"accuracy": correct / len(labels), "loss": loss / len(labels)}


@functools.lru_cache(maxsize=8)
def _eval_fn(module):
    @jax.jit
    def counts(params, x, y, mask):
        logits = module.apply(params, x)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        right = jnp.argmax(logits, axis=-1) == y
        return jnp.sum(jnp.where(mask, right, False)), jnp.sum(jnp.where(mask, losses, 0.0))

    return counts


def _data_fingerprint(dataset: data.Dataset, num_examples: int, train_y: np.ndarray) -> dict:
    """What a checkpoint checks of the training data on resume: name, size, SHA-256 of the labels."""
    return {"name": dataset.name, "train_examples": int(num_examples),
            "labels_sha256": hashlib.sha256(np.ascontiguousarray(train_y).tobytes()).hexdigest()}


def _check_checkpoint_args(checkpoint_dir, checkpoint_every, resume) -> int | None:
    if checkpoint_every is not None:
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer)) \
                or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1 (steps), got {checkpoint_every!r}")
        checkpoint_every = int(checkpoint_every)
    if checkpoint_dir is None and (resume or checkpoint_every is not None):
        raise ValueError("resume and checkpoint_every need a checkpoint folder (checkpoint_dir, --checkpoint-dir)")
    if checkpoint_dir is not None and not resume and checkpoint.checkpoint_paths(checkpoint_dir):
        raise ValueError(f"checkpoint_dir {checkpoint_dir} already holds checkpoints of a run: resume it "
                         "(resume=True, --resume) or choose an empty folder")
    return checkpoint_every


def train(config: TrainConfig, data_dir=None, progress: bool = True, dataset: data.Dataset | None = None,
          noise_seed: int | None = None, checkpoint_dir=None, checkpoint_every: int | None = None,
          resume: bool = False, devices: int | None = 1) -> dict:
    """Trains ``config`` and returns its record (a JSON-ready dict).

    Args:
        config: what to run (see :class:`~dpedu.configs.TrainConfig`).
        data_dir: data folder for the loaders (default ``$DPEDU_DATA_DIR``).
        progress: show a progress bar (``dpedu.progress``; ``TQDM_DISABLE=1`` also hides it).
        dataset: an already loaded :class:`dpedu.data.Dataset` of ``config.dataset`` (the config's
            subset and normalisation are still applied); default: load it.
        noise_seed: seed of the mechanism's randomness (Poisson sampling, Gaussian noise, DP-PCA
            noise). None (default): a secret seed from the OS's CSPRNG, never stored, so nobody can
            regenerate the noise. An int: a *published* seed for replayable teaching runs and tests
            (``noise_seed=config.seed`` replays runs made before this option existed); the record
            stores it with ``noise_seed_published: true`` and a warning, and emits a UserWarning
            for private runs.
        checkpoint_dir: folder for crash-safe checkpoints (:mod:`dpedu.checkpoint`), written at the
            end of each epoch and every ``checkpoint_every`` steps; None (default): none. A
            checkpoint holds the sampling and noise randomness: keep it as private as the data
            (anyone who has it can regenerate the noise, as with a published seed).
        checkpoint_every: also checkpoint every this many steps (an int >= 1).
        resume: continue from the newest valid checkpoint in ``checkpoint_dir`` (start afresh if
            there is none) to the same parameters and ε as an uninterrupted run; ``ValueError`` if
            it is of another config, data or noise seed.
        devices: run each step data-parallel over this many local devices
            (:func:`dpedu.parallel.shard_step`: examples split, clipped sums added, noise drawn
            once); 1 (default): the one-device step; None: all local devices. The same ε, and the
            same parameters up to the order of float32 sums.

    Returns:
        The record: ``config``, ``model``, ``dataset`` (name, source, notes, sizes),
        ``test_accuracy``, ``epsilon``, ``delta``, ``accountant``, ``noise_multiplier``,
        ``sampling_rate``, ``steps``, ``l2_clip_norm``, ``batch_size``, ``augmult``, ``ema``,
        ``seed`` (initialisation and augmentations only), ``noise_seed`` (None unless published),
        ``noise_seed_published``, ``noise_seed_warning`` (if published), ``sampler``, ``quick``,
        ``private``, ``pca``, ``history`` (per epoch: test accuracy and loss, ε so far),
        ``non_private_diagnostics`` (mean batch size and clipped fraction: exact functions of the
        private data, NOT covered by ε), ``checkpoint`` (only with ``checkpoint_dir``: folder,
        interval, the step resumed from), timings, and provenance (``command``, ``git_commit``,
        ``device``, ``date``).

    Formal guarantees:
        ``epsilon`` is computed by ``config.accountant`` (dp-accounting) for the DpEvent of the
        mechanism that ran: ``T`` steps of the sampled Gaussian mechanism with the σ used, Poisson
        sampling accounted as Poisson (shuffled batches as :func:`dpedu.accounting.dp_event`
        says), composed with the DP-PCA when there is one; it is ≤ ``target_epsilon``. The test
        set is only used for evaluation. ε covers the model (parameters, and the per-epoch test
        metrics as post-processing) only if the noise seed is secret (the default) and only under
        add/remove-one neighbours with N treated as public; it does NOT cover
        ``non_private_diagnostics``, nor any choice among several runs (hyper-parameter search).

        ==================================  ==================================================
        config                              ``epsilon`` accounts for
        ==================================  ==================================================
        ``sampler="poisson"``               T steps of ``PoissonSampled(q, Gaussian(σ))``
        ``sampler="shuffle"``               one ``Gaussian(σ)`` per epoch started (no
                                            amplification claimed)
        ``pca="dp"``                        ``Gaussian(σ_p)`` composed with the above
        ``pca="public"``                    the above, over the non-public examples only
        ``private=False``                   nothing: ``epsilon = None``, σ = 0
        target below the DP-PCA's own ε     ``ValueError`` before any work
        ==================================  ==================================================

    Raises:
        ValueError: a bad config value or an unreachable target (e.g. ε ≤ the DP-PCA's cost).
        dpedu.data.DataError: the data is missing or fails its checks.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    from dpedu.progress import progress as progress_bar
    from dpedu.provenance import record

    _memory.release()  # what earlier runs in this process freed, back to the OS (Binder: 2 GB)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a dpedu.configs.TrainConfig, got {type(config).__name__}")
    start = time.perf_counter()
    checkpoint_every = _check_checkpoint_args(checkpoint_dir, checkpoint_every, resume)
    _check_pca_budget(config)
    published = noise_seed is not None
    if published:
        noise_seed = int(noise_seed)
        if config.private:
            warnings.warn(f"{config.name}: {PUBLISHED_NOISE_SEED_WARNING}", UserWarning, stacklevel=2)
    resumed = checkpoint.load_latest(checkpoint_dir) if resume else None
    if resumed is not None:  # the run's own randomness, restored: no new (secret) seed is drawn
        checkpoint.check_matches(resumed, config=checkpoint.config_state(config),
                                 noise_seed=noise_seed if published else None, noise_seed_published=published)
        pca_rng = np.random.default_rng()
        pca_rng.bit_generator.state = resumed.meta["pca_rng_state"]
        mechanism_seed = None
    else:
        mechanism_seed = noise_seed if published else _secret_seed()
        sampling_seed, pca_seed = np.random.SeedSequence(mechanism_seed).spawn(2)
        pca_rng = np.random.default_rng(pca_seed)
    pca_rng_state = pca_rng.bit_generator.state if checkpoint_dir is not None else None
    dataset = _load(config, data_dir, dataset)
    train_x, train_y, test_x, pca_info = _project(config, dataset, pca_rng)
    test_y = dataset.test_labels
    num_examples = len(train_y)
    if config.batch_size > num_examples:
        raise ValueError(f"batch_size must be <= the {num_examples} training examples, got {config.batch_size}")
    q = config.batch_size / num_examples
    steps = max(1, round(config.epochs / q))
    fingerprint = _data_fingerprint(dataset, num_examples, train_y) if checkpoint_dir is not None else None

    t0 = time.perf_counter()
    if resumed is not None:  # σ as calibrated by the interrupted run: the same ε, no re-calibration
        checkpoint.check_matches(resumed, data=fingerprint, sampling_rate=q, steps=steps)
        sigma, accounting_seconds = resumed.meta["noise_multiplier"], resumed.meta["accounting_seconds"]
    else:
        sigma = _calibrate(config, q, steps, num_examples) if config.private else 0.0
        accounting_seconds = time.perf_counter() - t0

    module, params = models.init_params(config.model, config.seed, **config.model_overrides())
    optimizer = _optimizer(config, q, steps)

    # The one-example loss every clipping method takes; as a GhostLoss it also offers ghost clipping.
    loss_fn = ghost.GhostLoss(module, optax.softmax_cross_entropy_with_integer_labels)

    augmult = config.augmult > 0
    if config.private:
        clipping_method, norm_chunk_size = config.clipping()
        step_fn = dpsgd.make_dp_step(loss_fn, optimizer, l2_clip_norm=config.l2_clip_norm, noise_multiplier=sigma,
                                     expected_batch_size=config.batch_size, augmult=augmult,
                                     clipping_method=clipping_method, norm_chunk_size=norm_chunk_size)
        if clipping_method == "ghost":
            loss_fn.layer_plan(params, train_x[:1])  # an unsupported model fails now, not at the first step
    else:
        step_fn = dpsgd.make_nonprivate_step(loss_fn, optimizer, augmult=augmult)
    if devices != 1:
        from dpedu import parallel

        step_fn = parallel.shard_step(step_fn, devices)
    opt_state = optimizer.init(params)
    ema_update = jax.jit(functools.partial(averaging.ema_update, decay=config.ema)) if config.ema else None
    average = averaging.ema_init(params) if config.ema else None

    epsilon_so_far = _EpsilonSoFar(config, sigma, q, num_examples) if config.private else None
    # Augmentations depend on config.seed only (public, data-independent); the noise on the mechanism's seed.
    augment_root = jax.random.split(jax.random.key(config.seed))[1]
    if resumed is None:
        noise_root = _noise_key(mechanism_seed, published)
    else:
        noise_root = jax.random.wrap_key_data(np.asarray(resumed.arrays["noise_key"]),
                                              impl=resumed.meta["noise_key_impl"])
    del mechanism_seed  # a secret seed is never stored (a checkpoint stores the keys it derived)
    epoch_ends = {min(steps, max(1, round(e / q))) for e in range(1, math.ceil(config.epochs) + 1)}
    history, stats_sum, eval_seconds = [], {"clipped_fraction": 0.0, "batch_size": 0.0}, 0.0
    rng = np.random.default_rng(sampling_seed) if resumed is None else np.random.default_rng()
    done = 0
    if resumed is not None:
        done = resumed.step
        arrays = resumed.arrays
        params = checkpoint.restore(params, arrays["params"])
        opt_state = checkpoint.restore(opt_state, arrays["opt_state"])
        if average is not None:
            average = checkpoint.restore(average, arrays["average"])
        stats_sum = {key: arrays["stats_sum"][key] for key in stats_sum}
        history, eval_seconds = resumed.meta["history"], resumed.meta["eval_seconds"]
        if epsilon_so_far is not None:  # the same running PLD compositions as the uninterrupted run
            for entry in history:
                if entry["step"] != steps:
                    epsilon_so_far(entry["step"])
        rng.bit_generator.state = resumed.meta["sampler_initial_state"]
    sampler_initial_state = rng.bit_generator.state if checkpoint_dir is not None else None
    if resumed is not None and config.sampler == "poisson":  # where the sampler stopped
        rng.bit_generator.state = resumed.meta["sampler_state"]
        batches = _batches(config, rng, num_examples, q, steps - done)
    else:  # shuffled batches replay their epoch's permutation from the initial state
        batches = itertools.islice(_batches(config, rng, num_examples, q, steps), done, None)
    checkpoint_meta = None if checkpoint_dir is None else {
        "config": checkpoint.config_state(config), "data": fingerprint, "noise_seed": noise_seed if published else None,
        "noise_seed_published": published, "noise_key_impl": str(jax.random.key_impl(noise_root)),
        "pca_rng_state": pca_rng_state, "sampler_initial_state": sampler_initial_state, "noise_multiplier": sigma,
        "sampling_rate": q, "steps": steps, "accounting_seconds": accounting_seconds,
        "security_note": checkpoint.SECURITY_NOTE,
    }
    bar = progress_bar(total=steps, initial=done, desc=config.name, unit="step",
                       **({} if progress else {"disable": True}))
    t_train = time.perf_counter()
    if config.sampler == "poisson":
        microbatch_size = sampling.poisson_microbatch_size(num_examples, q, max_microbatch_size=config.microbatch_size)
    else:
        microbatch_size = min(config.microbatch_size, config.batch_size)
    for step, indices in enumerate(batches, start=done + 1):
        idx, mask = sampling.pad_to_microbatches(indices, microbatch_size)
        inputs = train_x[idx]
        if augmult:
            flat = inputs.reshape(-1, *inputs.shape[2:])
            copies = augment.augmult(jax.random.fold_in(augment_root, step), flat, config.augmult)
            inputs = copies.reshape(*idx.shape, *copies.shape[1:])
        params, opt_state, stats = step_fn(params, opt_state, jax.random.fold_in(noise_root, step),
                                           inputs, train_y[idx], mask)
        if ema_update is not None:
            average = ema_update(average, params, step - 1)
        for key in stats_sum:
            stats_sum[key] = stats_sum[key] + stats.get(key, 0.0)  # device arrays: no sync here
        bar.update(1)
        if step in epoch_ends:
            jax.block_until_ready(params)  # steps run asynchronously: charge them to training time
            t_eval = time.perf_counter()
            metrics = evaluate(module, average if ema_update else params, test_x, test_y)
            if not config.private:
                eps_so_far = None
            elif step == steps:  # the record's ε: one-shot, for the whole event that ran
                eps_so_far = accounting.epsilon_for_event(_training_event(config, sigma, q, step, num_examples),
                                                          config.delta, config.accountant)
            else:
                eps_so_far = epsilon_so_far(step)
            history.append({"epoch": round(step * q, 3), "step": step, "test_accuracy": metrics["accuracy"],
                            "test_loss": metrics["loss"], "epsilon": eps_so_far})
            eval_seconds += time.perf_counter() - t_eval
            bar.set_postfix(test_acc=f"{metrics['accuracy']:.4f}", test_loss=f"{metrics['loss']:.3f}",
                            eps="-" if eps_so_far is None else f"{eps_so_far:.3f}")
        if checkpoint_meta is not None and (step in epoch_ends or (checkpoint_every and step % checkpoint_every == 0)):
            checkpoint.save(checkpoint_dir, step, arrays={
                "params": params, "opt_state": opt_state, **({"average": average} if average is not None else {}),
                "stats_sum": {key: np.asarray(value) for key, value in stats_sum.items()},
                "noise_key": np.asarray(jax.random.key_data(noise_root))},
                meta={**checkpoint_meta, "history": history, "eval_seconds": eval_seconds,
                      "sampler_state": rng.bit_generator.state})
    bar.close()
    train_seconds = time.perf_counter() - t_train - eval_seconds

    epsilon = history[-1]["epsilon"]
    if config.private and not epsilon <= config.target_epsilon:
        raise RuntimeError(f"internal error: epsilon {epsilon} exceeds target {config.target_epsilon}")
    return record(
        config=dataclasses.asdict(config),
        devices=getattr(step_fn, "num_devices", 1),
        model={"name": config.model, "overrides": config.model_overrides(), "description": _describe_model(config),
               "parameters": models.count_params(params)},
        dataset={"name": dataset.name, "source": dataset.source, "notes": dataset.notes,
                 "train_examples": num_examples, "test_examples": len(test_y)},
        test_accuracy=history[-1]["test_accuracy"],
        epsilon=epsilon,
        target_epsilon=config.target_epsilon,
        delta=config.delta,
        accountant=config.accountant,
        private=config.private,
        noise_multiplier=sigma,
        sampling_rate=q,
        steps=steps,
        epochs=config.epochs,
        l2_clip_norm=config.l2_clip_norm,
        batch_size=config.batch_size,
        microbatch_size=microbatch_size,
        augmult=config.augmult,
        ema=config.ema,
        seed=config.seed,
        noise_seed=noise_seed if published else None,
        noise_seed_published=published,
        **({"noise_seed_warning": PUBLISHED_NOISE_SEED_WARNING} if published else {}),
        sampler=config.sampler,
        clipping=dict(zip(("method", "norm_chunk_size"), config.clipping())) if config.private else None,
        quick=config.quick,
        pca=pca_info,
        non_private_diagnostics={
            "mean_clipped_fraction": float(stats_sum["clipped_fraction"]) / steps if config.private else None,
            "mean_batch_size": float(stats_sum["batch_size"]) / steps,
            "note": NON_PRIVATE_DIAGNOSTICS_NOTE,
        },
        history=history,
        **({"checkpoint": {"dir": str(checkpoint_dir), "every": checkpoint_every,
                           "resumed_from_step": resumed.step if resumed is not None else None,
                           "note": checkpoint.SECURITY_NOTE}} if checkpoint_dir is not None else {}),
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        accounting_seconds=accounting_seconds,
        wall_seconds=time.perf_counter() - start,
    )


def main(args) -> int:
    """``dpedu train``: runs a registered config (its quick variant with ``--quick`` or
    ``DPEDU_QUICK=1``), prints a summary line, writes the record to ``--out``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    quick = bool(args.quick) or os.environ.get("DPEDU_QUICK") == "1"
    config = get_config(args.config, quick=quick)
    overrides = {name: getattr(args, name) for name in ("target_epsilon", "delta", "epochs", "seed", "source")
                 if getattr(args, name, None) is not None}
    if overrides:
        config = dataclasses.replace(config, **overrides)
    # A published noise seed only when asked for (``--noise-seed`` where the CLI offers it).
    result = train(config, data_dir=args.data_dir, noise_seed=getattr(args, "noise_seed", None),
                   checkpoint_dir=getattr(args, "checkpoint_dir", None),
                   checkpoint_every=getattr(args, "checkpoint_every", None), resume=bool(getattr(args, "resume", False)),
                   devices=getattr(args, "devices", 1))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    eps = "non-private" if result["epsilon"] is None else f"ε = {result['epsilon']:.3f} at δ = {result['delta']:g}"
    print(f"{config.name}{' (quick)' if config.quick else ''}: test accuracy {result['test_accuracy']:.4f} "
          f"on {result['dataset']['name']}, {eps} ({result['accountant']}, σ = {result['noise_multiplier']:.4g}, "
          f"{result['steps']} steps), {result['wall_seconds']:.1f} s" + (f"; record: {args.out}" if args.out else ""))
    return 0
