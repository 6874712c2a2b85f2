"""dpedu.sampling: Poisson batches are Binomial(N, q), padding never truncates, shuffling."""

import math

import numpy as np
import pytest
from scipy import stats

from dpedu.sampling import (
    pad_to_microbatches,
    poisson_batch_indices,
    poisson_microbatch_size,
    shuffled_batches,
)


def test_poisson_batch_sizes_follow_binomial():
    rng = np.random.default_rng(0)
    n, q, draws = 400, 0.05, 4000
    batches = [poisson_batch_indices(rng, n, q) for _ in range(draws)]
    sizes = np.array([b.size for b in batches])
    # Chi-square goodness of fit against Binomial(n, q), tail bins merged so each expects >= 5.
    lo, hi = int(stats.binom.ppf(0.005, n, q)), int(stats.binom.ppf(0.995, n, q))
    edges = np.arange(lo, hi + 1)
    probs = stats.binom.pmf(edges, n, q)
    probs[0] += stats.binom.cdf(lo - 1, n, q)
    probs[-1] += stats.binom.sf(hi, n, q)
    observed = np.array([np.sum(np.clip(sizes, lo, hi) == k) for k in edges])
    assert np.all(probs * draws >= 5)
    assert stats.chisquare(observed, probs * draws).pvalue > 1e-3
    # Each example is included with probability q: the count of example 0 is Binomial(draws, q).
    inclusion = np.zeros(n)
    for b in batches:
        inclusion[b] += 1
    assert stats.binomtest(int(inclusion[0]), draws, q).pvalue > 1e-3
    assert abs(inclusion.mean() / draws - q) < 4 * math.sqrt(q * (1 - q) / (draws * n))
    for b in batches[:50]:
        assert np.all(np.diff(b) > 0) and (b.size == 0 or (b[0] >= 0 and b[-1] < n))


def test_poisson_rate_one_takes_everything_and_bad_arguments_fail():
    np.testing.assert_array_equal(poisson_batch_indices(np.random.default_rng(0), 7, 1.0), np.arange(7))
    with pytest.raises(ValueError, match="sampling_rate"):
        poisson_batch_indices(np.random.default_rng(0), 10, 0.0)
    with pytest.raises(ValueError, match="num_examples"):
        poisson_batch_indices(np.random.default_rng(0), 0, 0.5)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 24, 25])
def test_pad_to_microbatches_never_truncates(size):
    indices = np.arange(100, 100 + size)
    idx, mask = pad_to_microbatches(indices, 8)
    assert idx.dtype == np.int32 and mask.dtype == bool
    assert idx.shape == mask.shape == (max(1, math.ceil(size / 8)), 8)
    np.testing.assert_array_equal(idx[mask], indices)  # every index once, in order
    assert np.all(idx[~mask] == 0)
    assert mask.sum() == size


def test_empty_batch_gives_one_all_masked_microbatch():
    idx, mask = pad_to_microbatches(np.array([], dtype=np.int64), 4)
    assert idx.shape == (1, 4) and not mask.any()


@pytest.mark.parametrize(
    "indices, size, match",
    [([1, 2], 0, "microbatch_size"), ([1, 2], 2.5, "microbatch_size"), ([[1, 2]], 2, "indices"),
     ([1.0, 2.0], 2, "indices"), ([-1, 2], 2, "indices")],
)
def test_pad_to_microbatches_rejects_bad_input(indices, size, match):
    with pytest.raises(ValueError, match=match):
        pad_to_microbatches(np.array(indices), size)


def test_poisson_microbatch_size_is_mean_plus_four_std_capped():
    # N = 60,000, q = 256/N: 256 + 4 * sqrt(256 (1 - q)) = 319.86 -> 320.
    assert poisson_microbatch_size(60_000, 256 / 60_000) == 320
    assert poisson_microbatch_size(60_000, 256 / 60_000, max_microbatch_size=128) == 128
    assert poisson_microbatch_size(10, 1.0) == 10  # never more than N
    # Overflow is rare: P(Binomial > size) <= 1e-4 at 4 std.
    assert stats.binom.sf(320, 60_000, 256 / 60_000) < 1e-4
    with pytest.raises(ValueError, match="num_stds"):
        poisson_microbatch_size(100, 0.1, num_stds=0)
    with pytest.raises(ValueError, match="max_microbatch_size"):
        poisson_microbatch_size(100, 0.1, max_microbatch_size=0)


def test_shuffled_batches_cover_each_example_at_most_once_per_epoch():
    batches = list(shuffled_batches(np.random.default_rng(0), 103, 10))
    assert len(batches) == 10 and all(b.size == 10 for b in batches)
    seen = np.concatenate(batches)
    assert np.unique(seen).size == 100 and seen.min() >= 0 and seen.max() < 103
    other = np.concatenate(list(shuffled_batches(np.random.default_rng(1), 103, 10)))
    assert not np.array_equal(seen, other)
    with pytest.raises(ValueError, match="batch_size"):
        shuffled_batches(np.random.default_rng(0), 5, 6)
