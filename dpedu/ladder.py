"""The CIFAR-10 ablation ladder of De et al. 2022, as one :class:`~dpedu.configs.TrainConfig` per rung.

De, Berrada, Hayes, Smith & Balle 2022, "Unlocking High-Accuracy Differentially Private Image
Classification through Scale", §3 (WRN-40-4 on CIFAR-10 at (ε, δ) = (8, 1e-5)): starting from a
Wide-ResNet without batch normalisation, they add one technique at a time and report the
validation accuracy after each (the paper's numbers, :data:`PAPER_VALIDATION_ACCURACY`):

====  =============================================  =======
rung  change                                         paper %
====  =============================================  =======
0     WRN-40-4 without batch norm                    50.8
1     + group normalisation (16 groups)              66.3
2     + larger batch (4096, by virtual batching)     70.0
3     + weight standardisation                       71.2
4     + augmentation multiplicity (16)               78.4
5     + parameter averaging (EMA)                    79.7
====  =============================================  =======

Each rung is ``dataclasses.replace(previous_rung, **{field: value})`` with exactly ONE field
changed (:data:`RUNG_FIELDS`); the target ε, δ, clipping norm, optimiser and number of EPOCHS stay
fixed, so a larger batch means fewer steps and a re-calibrated noise multiplier σ (the training
run calibrates σ to ε; see :func:`noise_to_signal`).

Four scales (:data:`SCALES`):

* ``"quick"``: CI on 2 CPU cores, about a minute per rung or less: WRN-10-1 for one epoch on the
  2,000 pixel-exact CIFAR-10 images packaged with dpedu (official training images 0-999 and test
  images 0-999, ``source="sample"``; labelled "CIFAR-10 (dpedu sample: ...)", so it runs on any
  machine, offline too). NOT the paper's numbers: 8 to 16 steps only show that the pipeline runs
  with a valid ε. (The stored quick record was made on a 1,000/1,000 subset of the JPEG copy and
  says so.)
* ``"cpu"``: what fits on 2 CPU cores in about 20-25 minutes for the whole ladder: a small WRN
  on the full JPEG copy of CIFAR-10 (50,000 training, 10,000 test images) for a short budget
  (see :data:`CPU_REFERENCE`), ε = 8 accounted with PLD for Poisson sampling. Far below the
  paper's numbers: 49 to 195 noisy steps of a network ~100x smaller.
* ``"colab"``: a free Colab GPU, aimed at about 15 minutes per rung (an estimate, not yet
  measured): WRN-16-4 for 10 epochs on CIFAR-10 (tensorflow-datasets or the official files),
  augmentation multiplicity 4, ε = 8 exact.
* ``"paper"``: WRN-40-4 with De et al.'s batch size, clipping norm, augmentation multiplicity and
  EMA (see :data:`PAPER_REFERENCE` for which values are theirs); an accelerator is needed.

Taught in notebooks/04_cifar10_ladder.ipynb.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from dpedu import _memory, accounting, provenance
from dpedu._validation import check_delta, check_epsilon, check_positive, check_steps
from dpedu.configs import TrainConfig

SCALES = ("quick", "cpu", "colab", "paper")

PAPER_LABEL = "De et al. 2022 (paper)"
# De et al. 2022, CIFAR-10 WRN-40-4 at (8, 1e-5): validation accuracy (%) after each rung.
PAPER_VALIDATION_ACCURACY = (50.8, 66.3, 70.0, 71.2, 78.4, 79.7)

RUNG_TITLES = (
    "WRN without batch norm",
    "+ group norm (16 groups)",
    "+ larger batch (virtual batching)",
    "+ weight standardisation",
    "+ augmentation multiplicity",
    "+ parameter averaging (EMA)",
)
# The one TrainConfig field each rung changes (rung 0 is the starting point).
RUNG_FIELDS = (None, "norm", "batch_size", "weight_standardization", "augmult", "ema")
NUM_RUNGS = len(RUNG_TITLES)

# Where the committed command stores its records (a checkout of the repository; absent in a pip install).

# Fields that label a config rather than change what runs: ignored by diff().
_LABEL_FIELDS = ("name", "reference")

# EMA decay 0.9999 for the paper-scale WRN-40-4, with De et al.'s warm-up (dpedu.averaging). An
# earlier session read it from a release of their jax_privacy config cifar10_wrn_16_4_eps1; the
# versions of that file we can read now (commits 8c284ce, 0e9d939; a WRN-16-4 at ε = 1) say 0.999,
# so the WRN-40-4's own decay is unverified, like its lr and number of updates (below).
EMA_DECAY = 0.9999

# Which paper-scale values are De et al.'s, where each was checked, and which are ours. The paper's
# Appendix C table of hyper-parameters could not be read offline: the WRN-40-4's own learning
# rate and number of updates at ε = 8 stay unverified.
PAPER_REFERENCE = (
    "De et al. 2022 ablation, WRN-40-4 on CIFAR-10 at (8, 1e-5). Checked against public sources: "
    "WRN-40-4 (the paper's abstract: a 40-layer Wide-ResNet, 81.4 % at (8, 1e-5)); batch 4096 by "
    "virtual batching, SGD without momentum at lr 2, C = 1 and augmentation multiplicity 16, as in "
    "De et al.'s released jax_privacy config cifar10_wrn_16_4_eps1 (a WRN-16-4 at ε = 1); 2,500 updates of batch 4096 as in the ε = 8 CIFAR-10 WRN reference run of Sander "
    "et al. 2022 (TAN, facebookresearch/tan README: B = 4096, σ = 3, 2,500 steps, 16 augmentations). "
    "NOT verified: the WRN-40-4's own lr, number of updates and EMA decay at ε = 8 (the paper's "
    "Appendix C); we use EMA decay 0.9999 (the WRN-16-4 config's versions at jax_privacy commits "
    "8c284ce and 0e9d939 say 0.999). "
    "Our choices: batch 1024 for rungs 0-1 and 204.8 epochs (2,500 updates at batch 4096) for every "
    "rung; σ is calibrated to ε = 8 by our accountant for the Poisson sampling that runs (for 2,500 "
    "Poisson steps at q = 4096/50,000, σ = 3 gives ε ≈ 6.6 by PLD and ≈ 7.1 by RDP at δ = 1e-5, so "
    "the calibrated σ is below 3)."
)

# The cpu scale: what the whole ladder can do in about 20-25 minutes on 2 CPU cores.
CPU_REFERENCE = (
    "CPU scale: WRN-10-1 (79k parameters) on the full JPEG copy of CIFAR-10 (50,000 training, "
    "10,000 test images) for half an epoch, batch 128 then 512 (195 then 49 noisy steps), augmentation "
    "multiplicity 2, SGD lr 2, C = 1; σ calibrated to ε = 8 with PLD for Poisson sampling. A "
    "short-budget run on a small network, NOT the paper's setting: its accuracies are far below "
    "the paper's."
)

# Per scale: the starting point (rung 0) and the value each later rung sets.
_SCALES: dict[str, tuple[TrainConfig, dict]] = {}


def _base(scale: str, **fields) -> TrainConfig:
    return TrainConfig(
        name=f"ladder-{scale}-rung0", dataset="cifar10", target_epsilon=8.0, delta=1e-5,
        optimizer="sgd", l2_clip_norm=1.0, augmult=0, ema=None, norm="none",
        weight_standardization=False, sampler="poisson", seed=0, **fields,
    )


# Micro-batches of 32 examples: on a 2-core CPU, per-example gradients of a small WRN run about
# twice as fast in micro-batches of 16-32 as in micro-batches of 128 (cache-sized working sets).
_SCALES["quick"] = (
    _base(
        "quick", model="wrn-tiny", source="sample", batch_size=64, microbatch_size=32, epochs=1.0,
        lr=2.0, train_examples=1000, test_examples=1000, quick=True,
        # RDP: a valid upper bound like PLD, and calibrates in milliseconds instead of seconds.
        accountant="rdp",
        reference=("Quick scale (CI): WRN-10-1 on the 1,000 training / 1,000 test images of CIFAR-10 "
                   "packaged with dpedu (source 'sample'), 1 epoch, augmentation multiplicity 2; "
                   "shows that the pipeline runs, NOT the paper's numbers."),
    ),
    dict(norm="group", batch_size=128, weight_standardization=True, augmult=2, ema=EMA_DECAY),
)
_SCALES["cpu"] = (
    _base(
        "cpu", model="wrn-tiny", source="jpeg", batch_size=128, microbatch_size=32, epochs=0.5,
        lr=2.0, accountant="pld", reference=CPU_REFERENCE,
    ),
    dict(norm="group", batch_size=512, weight_standardization=True, augmult=2, ema=EMA_DECAY),
)
_SCALES["colab"] = (
    _base(
        "colab", model="wrn-16-4", source=None, batch_size=1024, microbatch_size=128, epochs=10.0,
        lr=2.0,
        reference=("Colab scale: WRN-16-4 on CIFAR-10 (tensorflow-datasets), 10 epochs, "
                   "augmentation multiplicity 4; ε = 8 exact. Budget of ~15 min per rung on a free "
                   "Colab GPU is an estimate, not yet measured."),
    ),
    dict(norm="group", batch_size=4096, weight_standardization=True, augmult=4, ema=EMA_DECAY),
)
_SCALES["paper"] = (
    _base(
        "paper", model="wrn-40-4", source=None, batch_size=1024, microbatch_size=64,
        epochs=2500 * 4096 / 50_000, lr=2.0, reference=PAPER_REFERENCE,
    ),
    dict(norm="group", batch_size=4096, weight_standardization=True, augmult=16, ema=EMA_DECAY),
)


def _check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(map(repr, SCALES))}; got {scale!r}")
    return scale


def ladder_configs(scale: str) -> list[TrainConfig]:
    """The six rung configs at ``scale``; rung ``i`` changes only ``RUNG_FIELDS[i]`` of rung ``i-1``.

    Args:
        scale: one of :data:`SCALES` (``"quick"``, ``"cpu"``, ``"colab"``, ``"paper"``).

    Returns:
        ``[rung0, ..., rung5]``, named ``ladder-<scale>-rung<i>``.

    Raises:
        ValueError: unknown ``scale``.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    base, values = _SCALES[_check_scale(scale)]
    configs = [base]
    for index, field in enumerate(RUNG_FIELDS[1:], start=1):
        configs.append(dataclasses.replace(configs[-1], name=f"ladder-{scale}-rung{index}",
                                           **{field: values[field]}))
    return configs


def diff(rung_a: TrainConfig, rung_b: TrainConfig) -> dict[str, tuple]:
    """What changes from ``rung_a`` to ``rung_b``: ``{field: (value_in_a, value_in_b)}``.

    Fields in :class:`~dpedu.configs.TrainConfig` order; the labels ``name`` and ``reference`` are
    ignored. Consecutive rungs of :func:`ladder_configs` differ in exactly one field.

    Raises:
        ValueError: an argument is not a ``TrainConfig``.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    for arg, value in (("rung_a", rung_a), ("rung_b", rung_b)):
        if not isinstance(value, TrainConfig):
            raise ValueError(f"{arg} must be a dpedu.configs.TrainConfig, got {type(value).__name__}")
    changes = {}
    for field in dataclasses.fields(TrainConfig):
        before, after = getattr(rung_a, field.name), getattr(rung_b, field.name)
        if field.name not in _LABEL_FIELDS and before != after:
            changes[field.name] = (before, after)
    return changes


def parse_rungs(text: str) -> list[int]:
    """Rung indices from ``"0-5"``, ``"2"`` or ``"0,3,5"`` (ranges inclusive), sorted, unique.

    Raises:
        ValueError: not of that form, or an index outside ``[0, 5]``.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    indices = set()
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise ValueError(f"rungs must look like '0-5', '3' or '0,2,4'; got {text!r}")
        first = int(match.group(1))
        indices.update(range(first, int(match.group(2) or first) + 1))
    if not indices or max(indices) >= NUM_RUNGS:
        raise ValueError(f"rungs must lie in [0, {NUM_RUNGS - 1}]; got {text!r}")
    return sorted(indices)


def noise_to_signal(batch_sizes, *, num_examples: int, epochs: float, target_epsilon: float = 8.0,
                    delta: float = 1e-5, accountant: str = "rdp") -> tuple[np.ndarray, np.ndarray]:
    """Noise std relative to the clipped-gradient sum, ``σ(B)·C / (B·C) = σ(B) / B``, at fixed ε.

    De et al. 2022, §3 (larger batches): for a fixed privacy budget and a fixed number of epochs,
    each batch size ``B`` gets sampling rate ``q = B / N`` and ``T = round(epochs / q)`` steps (as
    training counts them), and σ(B) is calibrated by
    :func:`dpedu.accounting.calibrate_noise_multiplier` so that the run meets ``target_epsilon``.
    Each step adds noise of std ``σ(B)·C`` to a sum of about ``B`` clipped gradients of norm up to
    ``C``: the ratio ``σ(B) / B`` is the noise per unit of signal. σ grows much more slowly than
    ``B``, so the ratio falls as the batch grows.

    Formal guarantees:
        Every σ returned meets ``(target_epsilon, delta)`` for DP-SGD with Poisson sampling at
        ``(q, T)`` under ``accountant`` (see :func:`dpedu.accounting.calibrate_noise_multiplier`).

    Edge cases:

        ==========================  ==========================================
        input                       behaviour
        ==========================  ==========================================
        ``B == num_examples``       ``q = 1``: full-batch, no amplification
        ``B > num_examples``        ``ValueError``
        ``epochs`` tiny             at least one step (``T >= 1``)
        ==========================  ==========================================

    Args:
        batch_sizes: expected batch sizes ``B``, integers in ``[1, num_examples]``.
        num_examples: training set size ``N``.
        epochs: training length, the same for every ``B``.
        target_epsilon: ε to meet.
        delta: δ.
        accountant: an accountant of :mod:`dpedu.accounting` (default ``"rdp"``: fast, and a valid
            upper bound; ``"pld"`` is tighter but takes seconds per batch size).

    Returns:
        ``(noise_multipliers, ratios)``: arrays of σ(B) and σ(B) / B.

    Raises:
        ValueError: an argument outside its range.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    num_examples = check_steps(num_examples, "num_examples")
    epochs = check_positive("epochs", epochs)
    target_epsilon = check_epsilon(target_epsilon, "target_epsilon")
    delta = check_delta(delta)
    sigmas = []
    sizes = [check_steps(b, "batch_sizes") for b in np.atleast_1d(batch_sizes).tolist()]
    for size in sizes:
        if size > num_examples:
            raise ValueError(f"batch_sizes must be <= num_examples={num_examples}, got {size}")
        q = size / num_examples
        steps = max(1, round(epochs / q))
        sigmas.append(accounting.calibrate_noise_multiplier(target_epsilon, q, steps, delta, accountant))
    sigmas = np.asarray(sigmas)
    return sigmas, sigmas / np.asarray(sizes, dtype=float)


def run_ladder(scale: str, rungs=None, *, dataset=None, **train_kwargs) -> list[dict]:
    """Trains the rungs of the ladder at ``scale`` with :func:`dpedu.train.train`, one by one.

    The data is loaded once (every rung of a scale uses the same source) and handed to each run,
    which applies the config's subset and input normalisation as usual.

    Args:
        scale: one of :data:`SCALES` (``"quick"``, ``"cpu"``, ``"colab"``, ``"paper"``).
        rungs: rung indices (default all six), or a string for :func:`parse_rungs`.
        dataset: the loaded :class:`dpedu.data.Dataset` (default: load the configs' source).
        **train_kwargs: passed to :func:`dpedu.train.train` (e.g. ``data_dir``, ``progress``).

    Returns:
        One record per rung: the training record of :func:`dpedu.train.train` with ``rung``,
        ``title``, ``change`` (this rung's :func:`diff` from the previous rung, as
        ``{field: [before, after]}``) and ``paper_validation_accuracy`` (labelled
        :data:`PAPER_LABEL`) added.

    Raises:
        ValueError: unknown scale or rung.
        dpedu.data.DataError: the data is missing or fails its checks.

    Formal guarantees:
        Each rung's ``epsilon`` is the one its training run accounted for the mechanism that ran.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    from dpedu import data, train
    from dpedu.progress import progress

    configs = ladder_configs(scale)
    indices = parse_rungs(rungs if isinstance(rungs, str) else ",".join(map(str, range(NUM_RUNGS) if rungs is None else rungs)))
    if dataset is None:
        dataset = data.load_cifar10(source=configs[0].source or "auto", data_dir=train_kwargs.get("data_dir"),
                                    quick=configs[0].quick)
    records = []
    for index in progress(indices, desc=f"ladder ({scale})", unit="rung"):
        # Each rung compiles its own model: drop the last rung's, so that the quick ladder fits in
        # Binder's memory (notebook 04 peaked at 1.8 GB without this, 1.1 GB with it).
        _memory.release(clear_compiled=True)
        record = dict(train.train(configs[index], dataset=dataset, **train_kwargs))
        change = diff(configs[index - 1], configs[index]) if index else {}
        record.update(
            rung=index, title=RUNG_TITLES[index],
            change={field: list(values) for field, values in change.items()},
            paper_validation_accuracy=PAPER_VALIDATION_ACCURACY[index], paper_label=PAPER_LABEL,
        )
        records.append(record)
    return records


def load_results(scale: str, results_dir=None) -> dict | None:
    """The stored ladder record ``dpedu/results/ladder_<scale>.json``, or None if no such run is stored.

    Args:
        scale: one of :data:`SCALES` (``"quick"``, ``"cpu"``, ``"colab"``, ``"paper"``).
        results_dir: folder of the records (default: the records shipped with dpedu).

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    return provenance.load_record(f"ladder_{_check_scale(scale)}.json", results_dir)
