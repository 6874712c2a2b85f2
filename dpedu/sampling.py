"""Batch selection on the host (NumPy): Poisson sampling, padding to micro-batches, shuffling.

DP-SGD's privacy amplification by sampling (Abadi et al. 2016, §3.1; Mironov, Talwar & Zhang
2019) is proved for POISSON sampling: every example joins each batch independently with
probability ``q``, so batch sizes vary. That is what ``dp_accounting.PoissonSampledDpEvent``
(:func:`dpedu.accounting.dp_event` with ``sampler="poisson"``) assumes, and what
:func:`poisson_batch_indices` does. Fixed-size shuffled batches (:func:`shuffled_batches`) are a
DIFFERENT mechanism: account them with ``sampler="shuffle"``, never as Poisson.

Variable batch sizes meet fixed-shape compiled steps through :func:`pad_to_microbatches`: a
batch is cut into micro-batches of one fixed size, the last one padded and masked, so the jitted
step never recompiles and never drops an example.

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from dpedu._validation import check_positive, check_sampling_rate, check_steps


def poisson_batch_indices(rng: np.random.Generator, num_examples: int, sampling_rate: float) -> np.ndarray:
    """The indices of one Poisson-sampled batch: each example kept independently with prob. q.

    Abadi et al. 2016, §3.1 ("lots" formed by picking each example independently with
    probability ``q = L / N``).

    Formal guarantees:
        Example ``i`` is in the batch with probability exactly ``sampling_rate`` (up to the
        generator's 53-bit resolution), independently of every other example and of previous
        batches: the sampling that ``dp_accounting.PoissonSampledDpEvent`` accounts for. The batch
        size is therefore ``Binomial(num_examples, sampling_rate)`` and may be 0; a trainer must
        still take the step (and add the noise) then.

    Edge cases: ``sampling_rate == 1`` gives every index; the result may be empty.

    Args:
        rng: NumPy random generator (the host's source of sampling randomness).
        num_examples: ``N >= 1``.
        sampling_rate: ``q`` in ``(0, 1]``.

    Returns:
        Sorted ``int64`` indices in ``[0, N)``, without repeats.

    Raises:
        ValueError: ``num_examples`` not an integer ``>= 1``; ``sampling_rate`` outside ``(0, 1]``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    num_examples = check_steps(num_examples, "num_examples")
    sampling_rate = check_sampling_rate(sampling_rate)
    return np.flatnonzero(rng.random(num_examples) < sampling_rate)


def pad_to_microbatches(indices, microbatch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cuts a batch into fixed-size micro-batches, padding the last one with masked slots.

    Virtual batching (the "lot" of Abadi et al. 2016, §3.1, computed in pieces): the number of
    micro-batches is ``max(1, ceil(len(indices) / microbatch_size))``; padded slots hold index 0
    and mask False, and :func:`dpedu.clipping.clipped_grad` zeroes them.

    Formal guarantees:
        Never truncates: every index appears exactly once with mask True, in order, so the padded
        computation sums exactly the sampled examples. An empty batch still gives ONE all-masked
        micro-batch, so the step (and its noise) still happens — skipping it would change the
        mechanism that is accounted for. The number of micro-batches depends on the realised
        batch size, so it is NOT public: the released parameters do not depend on it (padding is
        masked), but wall-clock time does, and the DP guarantee does not cover timing.

    Args:
        indices: 1-D integer array of example indices (from :func:`poisson_batch_indices`).
        microbatch_size: ``m >= 1`` (the compiled, physical batch size).

    Returns:
        ``(idx, mask)``: ``idx`` ``int32 [n_micro, m]`` and ``mask`` ``bool [n_micro, m]``.

    Raises:
        ValueError: ``microbatch_size`` not an integer ``>= 1``; ``indices`` not 1-D integers
            ``>= 0``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    microbatch_size = check_steps(microbatch_size, "microbatch_size")
    indices = np.asarray(indices)
    if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D array of integers, got shape {indices.shape} "
                         f"and dtype {indices.dtype}")
    if indices.size and indices.min() < 0:
        raise ValueError(f"indices must be >= 0, got {int(indices.min())}")
    num_micro = max(1, math.ceil(indices.size / microbatch_size))
    idx = np.zeros(num_micro * microbatch_size, dtype=np.int32)
    mask = np.zeros(num_micro * microbatch_size, dtype=bool)
    idx[: indices.size] = indices
    mask[: indices.size] = True
    return idx.reshape(num_micro, microbatch_size), mask.reshape(num_micro, microbatch_size)


def poisson_microbatch_size(num_examples: int, sampling_rate: float, *, num_stds: float = 4.0,
                            max_microbatch_size: int | None = None) -> int:
    """A micro-batch size that holds a whole Poisson batch in one piece almost always.

    Returns ``ceil(qN + num_stds · sqrt(N q (1 - q)))`` — the expected batch size plus
    ``num_stds`` standard deviations of ``Binomial(N, q)`` — capped by ``max_microbatch_size``
    (memory) and by ``N``. With the default 4 std a batch overflows into a second micro-batch in
    about 3 steps in 100,000 (normal approximation); overflow is handled exactly by
    :func:`pad_to_microbatches`, it only costs time. It depends on public ``(N, q)`` only.

    Args:
        num_examples: ``N >= 1``.
        sampling_rate: ``q`` in ``(0, 1]``.
        num_stds: head-room in standard deviations, ``> 0``.
        max_microbatch_size: upper bound (``>= 1``) set by device memory; None for no bound.

    Returns:
        The micro-batch size, an int in ``[1, N]``.

    Raises:
        ValueError: an argument outside its range.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    num_examples = check_steps(num_examples, "num_examples")
    sampling_rate = check_sampling_rate(sampling_rate)
    num_stds = check_positive("num_stds", num_stds)
    mean = num_examples * sampling_rate
    size = math.ceil(mean + num_stds * math.sqrt(mean * (1.0 - sampling_rate)))
    if max_microbatch_size is not None:
        size = min(size, check_steps(max_microbatch_size, "max_microbatch_size"))
    return max(1, min(size, num_examples))


def shuffled_batches(rng: np.random.Generator, num_examples: int, batch_size: int) -> Iterator[np.ndarray]:
    """One epoch of fixed-size batches from a random permutation (for comparison with Poisson).

    The common non-private pipeline: shuffle, then cut into ``num_examples // batch_size``
    batches of exactly ``batch_size`` indices; the remainder is dropped, so every example is in
    at most one batch of the epoch.

    Formal guarantees:
        This is NOT Poisson sampling, and its ε must not be computed as if it were (a shortcut
        jax_privacy's guide warns against). Account it with
        ``dpedu.accounting.dp_event(..., sampler="shuffle")``.

    Args:
        rng: NumPy random generator.
        num_examples: ``N >= 1``.
        batch_size: ``1 <= batch_size <= N``.

    Returns:
        An iterator over ``num_examples // batch_size`` ``int64`` index arrays of length
        ``batch_size``.

    Raises:
        ValueError: an argument outside its range.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    num_examples = check_steps(num_examples, "num_examples")
    batch_size = check_steps(batch_size, "batch_size")
    if batch_size > num_examples:
        raise ValueError(f"batch_size must be in [1, num_examples={num_examples}], got {batch_size}")
    # Arguments are checked now, not at the first next(): the batches come from a generator.
    permutation = rng.permutation(num_examples)
    return (permutation[start:start + batch_size]
            for start in range(0, num_examples - batch_size + 1, batch_size))
