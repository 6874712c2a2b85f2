"""dpedu.membership: balanced splits, the stable logit confidence, LiRA equal to a hand computation and
never using its target as a shadow, shadow training that is the library's DP-SGD step with Poisson
sampling (and nothing of a non-member reaching a model), the ROC curve against jax_privacy, and the
experiment driver on tiny data."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from jax_privacy.auditing import CanaryScoreAuditor
from scipy import stats

from dpedu import attacks, dpsgd, membership, sampling
from dpedu.experiments import membership as experiment

# --------------------------------------------------------------------------------------------
# Tiny data: 4x4 images, 10 classes, a 4-unit MLP (compiles and trains in about a second)
# --------------------------------------------------------------------------------------------

MODULE = attacks.SmallMLP(4)


def tiny_pool(num_examples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.random((num_examples, 4, 4, 1), dtype=np.float32),
            rng.integers(0, 10, num_examples).astype(np.int32))


def flat(params, model: int) -> np.ndarray:
    return np.asarray(ravel_pytree(jax.tree_util.tree_map(lambda leaf: leaf[model], params))[0])


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_models, num_examples", [(2, 2), (4, 10), (8, 12), (16, 1000), (64, 2000)])
def test_masks_put_every_example_in_half_the_models_and_half_the_examples_in_every_model(num_models, num_examples):
    masks = membership.membership_masks(0, num_models, num_examples)
    assert masks.dtype == bool and masks.shape == (num_models, num_examples)
    assert (masks.sum(axis=0) == num_models // 2).all()
    assert (masks.sum(axis=1) == num_examples // 2).all()


def test_masks_are_random_and_seeded():
    a, b = membership.membership_masks(0, 8, 100), membership.membership_masks(0, 8, 100)
    np.testing.assert_array_equal(a, b)
    assert (a != membership.membership_masks(1, 8, 100)).any()
    # Two models share an example with probability (M/2)(M/2 - 1) / (M(M - 1)), as for independent
    # uniform halves per example: 8·7 / (16·15) = 0.2333.
    masks = membership.membership_masks(3, 16, 2000)
    overlap = (masks[:, None] & masks[None]).sum(-1)[~np.eye(16, dtype=bool)] / 2000
    assert abs(overlap.mean() - 56 / 240) < 0.003 and overlap.std() < 0.02


@pytest.mark.parametrize("num_models, num_examples", [(3, 10), (0, 10), (4, 7), (4, 0), (2.5, 10), (True, 10)])
def test_masks_reject_bad_sizes(num_models, num_examples):
    with pytest.raises(ValueError):
        membership.membership_masks(0, num_models, num_examples)


# --------------------------------------------------------------------------------------------
# Confidence and loss
# --------------------------------------------------------------------------------------------


def test_logit_confidence_equals_the_naive_formula_where_it_is_finite():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 50, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 50)
    got = np.asarray(membership.logit_confidence(logits, labels))
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    p_y = np.take_along_axis(p, np.broadcast_to(labels, (3, 50))[..., None], -1)[..., 0]
    np.testing.assert_allclose(got, np.log(p_y) - np.log1p(-p_y), rtol=1e-5, atol=1e-4)
    # Labels [M, N] and [N] broadcast the same way.
    np.testing.assert_array_equal(got, membership.logit_confidence(logits, np.broadcast_to(labels, (3, 50))))


def test_logit_confidence_is_finite_where_the_naive_formula_overflows():
    logits = jnp.array([[200.0, 0.0, 0.0], [-200.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1e4, -1e4, 1e4]])
    labels = jnp.array([0, 0, 1, 0])
    got = np.asarray(membership.logit_confidence(logits, labels))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, [200 - np.log(2), -200 - np.log(2), -np.log(2), -np.log(1)], rtol=1e-6)
    # Naively p rounds to 1 or 0 and log(1 - p) or log(p) is -inf.
    p = np.asarray(jax.nn.softmax(logits)[jnp.arange(4), labels])
    with np.errstate(divide="ignore"):
        assert not np.isfinite(np.log(p) - np.log1p(-p))[:2].any()


def test_loss_threshold_score_is_minus_the_cross_entropy():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(2, 7, 10)).astype(np.float32), rng.integers(0, 10, 7)
    expected = -optax.softmax_cross_entropy_with_integer_labels(logits, np.broadcast_to(labels, (2, 7)))
    np.testing.assert_allclose(membership.loss_threshold_scores(logits, labels), expected, rtol=1e-6)


def test_confidence_and_loss_reject_bad_labels():
    with pytest.raises(ValueError):
        membership.logit_confidence(np.zeros((3, 10)), np.zeros(4, np.int32))
    with pytest.raises(ValueError):
        membership.logit_confidence(np.zeros((3, 10)), np.zeros(3))  # float labels
    with pytest.raises(ValueError):
        membership.logit_confidence(np.zeros((3, 1)), np.zeros(3, np.int32))
    with pytest.raises(ValueError):
        membership.loss_threshold_scores(np.zeros((2, 3, 10)), np.zeros(2, np.int32))


# --------------------------------------------------------------------------------------------
# LiRA
# --------------------------------------------------------------------------------------------


def synthetic_confidences(num_models=16, num_examples=400, shift=1.5, seed=0):
    """φ = example's own level + shift if in + N(0, 1): what LiRA's Gaussians assume."""
    rng = np.random.default_rng(seed)
    masks = membership.membership_masks(seed, num_models, num_examples)
    level = rng.normal(0, 3, num_examples)
    confidence = level + shift * masks + rng.normal(0, 1, masks.shape)
    return confidence.astype(np.float32), masks


def hand_lira(confidence, masks, target, global_variance):
    """Carlini et al.'s Algorithm 1 written out with loops, in float64."""
    confidence = np.asarray(confidence, np.float64)
    num_models, num_examples = confidence.shape
    shadows = [m for m in range(num_models) if m != target]
    fits = {}
    for side in (True, False):
        values = [[confidence[m, i] for m in shadows if masks[m, i] == side] for i in range(num_examples)]
        means = np.array([np.mean(v) for v in values])
        if global_variance:
            variance = sum(np.sum((np.array(v) - mu) ** 2) for v, mu in zip(values, means)) / sum(
                len(v) - 1 for v in values)
            variances = np.full(num_examples, variance)
        else:
            variances = np.array([np.var(v, ddof=1) for v in values])
        fits[side] = (means, variances)
    observed = confidence[target]
    return (stats.norm.logpdf(observed, fits[True][0], np.sqrt(fits[True][1]))
            - stats.norm.logpdf(observed, fits[False][0], np.sqrt(fits[False][1])))


@pytest.mark.parametrize("global_variance", [True, False])
def test_lira_equals_a_hand_computation(global_variance):
    confidence, masks = synthetic_confidences(num_models=8, num_examples=30)
    for target in (0, 5):
        got = membership.lira_scores(confidence, masks, target, global_variance=global_variance)
        assert got.shape == (30,)
        np.testing.assert_allclose(got, hand_lira(confidence, masks, target, global_variance), rtol=1e-4, atol=1e-4)


def test_lira_ranks_members_above_non_members_on_a_known_shift():
    confidence, masks = synthetic_confidences(shift=1.5)
    scores = np.asarray(membership.lira_scores(confidence, masks, 3))
    members, others = scores[masks[3]], scores[~masks[3]]
    # Gaussians with unit variance and means 1.5 apart: AUC = Φ(1.5/√2) ≈ 0.86.
    auc = (members[:, None] > others[None]).mean()
    assert 0.78 < auc < 0.93
    # Without a shift there is nothing to find.
    confidence, masks = synthetic_confidences(shift=0.0)
    in_scores, out_scores = membership.lira_leave_one_out(confidence, masks)
    assert abs(membership.attack_summary(in_scores, out_scores)["auc"] - 0.5) < 0.02


@pytest.mark.parametrize("global_variance", [True, False])
def test_lira_never_uses_the_target_model_as_a_shadow(global_variance):
    confidence, masks = synthetic_confidences(num_models=8, num_examples=50)
    target = 2
    scores = membership.lira_scores(confidence, masks, target, global_variance=global_variance)
    # Flipping the target's memberships would move its row between the in- and out-fits if it
    # were used as a shadow; the scores stay exactly the same.
    other_masks = masks.copy()
    other_masks[target] = ~masks[target]
    np.testing.assert_array_equal(
        membership.lira_scores(confidence, other_masks, target, global_variance=global_variance), scores)
    # A shadow's confidences do change them.
    changed = confidence.copy()
    changed[5] += 1.0
    assert not np.allclose(membership.lira_scores(changed, masks, target, global_variance=global_variance), scores)


@pytest.mark.parametrize("global_variance", [True, False])
def test_leave_one_out_pools_every_models_own_scores(global_variance):
    confidence, masks = synthetic_confidences(num_models=6, num_examples=20)
    in_scores, out_scores = membership.lira_leave_one_out(confidence, masks, global_variance=global_variance)
    assert in_scores.shape == out_scores.shape == (60,)
    each = np.stack([membership.lira_scores(confidence, masks, t, global_variance=global_variance)
                     for t in range(6)])
    np.testing.assert_allclose(in_scores, each[masks], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_scores, each[~masks], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(each[0], hand_lira(confidence, masks, 0, global_variance), rtol=1e-4, atol=1e-4)


def test_lira_rejects_bad_inputs():
    confidence, masks = synthetic_confidences(num_models=4, num_examples=10)
    with pytest.raises(ValueError, match="target_model"):
        membership.lira_scores(confidence, masks, 4)
    with pytest.raises(ValueError, match="target_model"):
        membership.lira_scores(confidence, masks, -1)
    with pytest.raises(ValueError, match="bool"):
        membership.lira_scores(confidence, masks.astype(int), 0)
    with pytest.raises(ValueError, match="same shape"):
        membership.lira_scores(confidence[:, :5], masks, 0)
    # Four models leave each example 1 in-shadow or 1 out-shadow: not enough for per-example variances.
    with pytest.raises(ValueError, match="at least 2"):
        membership.lira_scores(confidence, masks, 0, global_variance=False)
    with pytest.raises(ValueError, match="at least 1"):
        membership.lira_leave_one_out(confidence[:2], masks[:2])
    with pytest.raises(ValueError):
        membership.pool_by_membership(confidence, masks[:, :3])


# --------------------------------------------------------------------------------------------
# Shadow training
# --------------------------------------------------------------------------------------------


def test_poisson_schedule():
    assert membership.poisson_schedule(500, 50, 20) == (0.1, 200)
    assert membership.poisson_schedule(1000, 500.0, 20) == (0.5, 40)
    assert membership.poisson_schedule(10, 10, 0.01) == (1.0, 1)
    for bad in [(0, 1, 1), (10, 0, 1), (10, 11, 1), (10, 5, 0), (10, 5, -1)]:
        with pytest.raises(ValueError):
            membership.poisson_schedule(*bad)


def test_dp_training_samples_each_models_own_examples_by_poisson_sampling():
    images, labels = tiny_pool(200)
    masks = membership.membership_masks(0, 4, 200)
    trained = membership.train_shadow_models(
        MODULE, images, labels, masks, jax.random.split(jax.random.key(0), 4), epochs=30, batch_size=30,
        learning_rate=0.1, l2_clip_norm=1.0, noise_multiplier=1.0)
    n, q = 100, 0.3
    assert trained.sampling_rate == q and trained.steps == 100 and trained.expected_batch_size == pytest.approx(30)
    assert trained.padded_batch_size == sampling.poisson_microbatch_size(n, q, num_stds=6.0)
    sizes = trained.batch_sizes
    assert sizes.shape == (4, 100) and sizes.dtype == np.int32
    # Binomial(n, q): mean 30, variance 21 (400 draws: the mean is within ±0.9 with 4.0 std).
    assert abs(sizes.mean() - q * n) < 4 * math.sqrt(q * (1 - q) * n / sizes.size)
    assert 0.7 < sizes.var() / (q * (1 - q) * n) < 1.35
    # Batches of one model are independent from step to step (no fixed-size or epoch structure).
    lag_one = np.corrcoef(sizes[:, :-1].ravel(), sizes[:, 1:].ravel())[0, 1]
    assert abs(lag_one) < 0.2


def hand_rolled_dp(images, labels, member_mask, key, *, epochs, batch_size, learning_rate, momentum,
                   l2_clip_norm, noise_multiplier, num_stds=6.0, cache={}):
    """One DP model by a Python loop of dpedu.dpsgd steps, with the key schedule documented in
    train_shadow_models, host-side padding (dpedu.sampling) and no vmap."""
    members = np.flatnonzero(member_mask)
    n = len(members)
    q, steps = membership.poisson_schedule(n, batch_size, epochs)
    padded = sampling.poisson_microbatch_size(n, q, num_stds=num_stds)
    optimizer = optax.sgd(learning_rate, momentum=momentum or None)
    settings = (learning_rate, momentum, l2_clip_norm, noise_multiplier, q * n)
    if settings not in cache:  # one step (one compilation) for every model of a test
        cache[settings] = dpsgd.make_dp_step(attacks.cross_entropy_loss(MODULE), optimizer, l2_clip_norm=l2_clip_norm,
                                             noise_multiplier=noise_multiplier, expected_batch_size=q * n)
    step = cache[settings]
    init_key, run_key = jax.random.split(key)
    params = MODULE.init(init_key, jnp.asarray(images[:1]))
    opt_state = optimizer.init(params)
    sizes = []
    for step_key in jax.random.split(run_key, steps):
        sample_key, noise_key = jax.random.split(step_key)
        chosen = np.asarray(jax.random.bernoulli(sample_key, q, (n,)))
        idx, mask = sampling.pad_to_microbatches(members[chosen], padded)
        params, opt_state, _ = step(params, opt_state, noise_key, images[idx], labels[idx], mask)
        sizes.append(int(chosen.sum()))
    return params, sizes


@pytest.mark.parametrize("clipping_method", ["per_example", "ghost"])
def test_dp_training_equals_a_hand_rolled_loop_of_dpsgd_steps(clipping_method):
    images, labels = tiny_pool(40, seed=1)
    masks = membership.membership_masks(1, 4, 40)
    keys = jax.random.split(jax.random.key(7), 4)
    kwargs = dict(epochs=4, batch_size=5, learning_rate=0.5, momentum=0.9, l2_clip_norm=0.5, noise_multiplier=1.3)
    trained = membership.train_shadow_models(MODULE, images, labels, masks, keys, clipping_method=clipping_method,
                                             models_per_batch=2, **kwargs)
    for model in (0, 3):
        params, sizes = hand_rolled_dp(images, labels, masks[model], keys[model], **kwargs)
        np.testing.assert_allclose(flat(trained.params, model), ravel_pytree(params)[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(trained.batch_sizes[model], sizes)


def test_nonprivate_training_equals_a_hand_rolled_loop():
    images, labels = tiny_pool(40, seed=2)
    masks = membership.membership_masks(2, 4, 40)
    keys = jax.random.split(jax.random.key(3), 4)
    # 3 models per batch: model 3 is trained in jax.lax.map's remainder batch.
    trained = membership.train_shadow_models(MODULE, images, labels, masks, keys, epochs=3, batch_size=6,
                                             learning_rate=0.3, momentum=0.5, models_per_batch=3)
    assert trained.steps == 9 and trained.sampling_rate is None and (trained.batch_sizes == 6).all()
    optimizer = optax.sgd(0.3, momentum=0.5)
    step = dpsgd.make_nonprivate_step(attacks.cross_entropy_loss(MODULE), optimizer)
    members = np.flatnonzero(masks[3])
    init_key, run_key = jax.random.split(keys[3])
    params = MODULE.init(init_key, jnp.asarray(images[:1]))
    opt_state = optimizer.init(params)
    for epoch_key in jax.random.split(run_key, 3):
        order = np.asarray(jax.random.permutation(epoch_key, 20))[:18].reshape(3, 6)
        for slots in order:
            idx = members[slots][None]
            params, opt_state, _ = step(params, opt_state, epoch_key, images[idx], labels[idx], np.ones((1, 6), bool))
    np.testing.assert_allclose(flat(trained.params, 3), ravel_pytree(params)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("private", [False, True])
def test_a_non_member_never_influences_a_model(private):
    images, labels = tiny_pool(40, seed=3)
    masks = membership.membership_masks(3, 4, 40)
    keys = jax.random.split(jax.random.key(5), 4)
    kwargs = (dict(l2_clip_norm=1.0, noise_multiplier=0.8, batch_size=8.0, epochs=3) if private
              else dict(batch_size=5, epochs=3))

    def train(images, labels):
        return membership.train_shadow_models(MODULE, images, labels, masks, keys, learning_rate=0.5, **kwargs)

    before = train(images, labels)
    outsider = int(np.flatnonzero(~masks[0])[0])
    changed_images, changed_labels = images.copy(), labels.copy()
    changed_images[outsider] = 1.0 - images[outsider]
    changed_labels[outsider] = (labels[outsider] + 1) % 10
    after = train(changed_images, changed_labels)
    for model in range(4):
        if masks[model, outsider]:
            assert not np.allclose(flat(after.params, model), flat(before.params, model))
        else:
            np.testing.assert_array_equal(flat(after.params, model), flat(before.params, model))
    np.testing.assert_array_equal(after.batch_sizes, before.batch_sizes)


def test_an_overflowing_poisson_batch_raises_instead_of_being_truncated():
    images, labels = tiny_pool(40)
    masks = membership.membership_masks(0, 2, 40)
    with pytest.raises(RuntimeError, match="padded batch size"):
        membership.train_shadow_models(MODULE, images, labels, masks, jax.random.split(jax.random.key(0), 2),
                                       epochs=20, batch_size=10.0, learning_rate=0.1, l2_clip_norm=1.0,
                                       noise_multiplier=1.0, num_stds=0.01)


def test_training_rejects_bad_inputs():
    images, labels = tiny_pool(20)
    masks = membership.membership_masks(0, 2, 20)
    keys = jax.random.split(jax.random.key(0), 2)
    good = dict(epochs=1, batch_size=2, learning_rate=0.1)
    with pytest.raises(ValueError, match="both"):
        membership.train_shadow_models(MODULE, images, labels, masks, keys, l2_clip_norm=1.0, **good)
    with pytest.raises(ValueError, match="noise_multiplier"):
        membership.train_shadow_models(MODULE, images, labels, masks, keys, l2_clip_norm=1.0, noise_multiplier=0.0,
                                       **good)
    unbalanced = masks.copy()
    unbalanced[0, np.flatnonzero(~masks[0])[0]] = True
    with pytest.raises(ValueError, match="same number"):
        membership.train_shadow_models(MODULE, images, labels, unbalanced, keys, **good)
    with pytest.raises(ValueError, match="one PRNG key per model"):
        membership.train_shadow_models(MODULE, images, labels, masks, keys[:1], **good)
    with pytest.raises(ValueError, match="batch_size"):
        membership.train_shadow_models(MODULE, images, labels, masks, keys, epochs=1, batch_size=11, learning_rate=0.1)
    with pytest.raises(ValueError, match="momentum"):
        membership.train_shadow_models(MODULE, images, labels, masks, keys, momentum=1.0, **good)
    with pytest.raises(ValueError, match="same N"):
        membership.train_shadow_models(MODULE, images[:10], labels, masks, keys, **good)


def test_stacked_logits_are_each_models_own():
    images, labels = tiny_pool(12)
    masks = membership.membership_masks(0, 4, 12)
    trained = membership.train_shadow_models(MODULE, images, labels, masks, jax.random.split(jax.random.key(0), 4),
                                             epochs=1, batch_size=3, learning_rate=0.1)
    logits = membership.stacked_logits(MODULE.apply, trained.params, images, models_per_batch=3)
    assert logits.shape == (4, 12, 10)
    for model in range(4):
        one = jax.tree_util.tree_map(lambda leaf: leaf[model], trained.params)
        np.testing.assert_allclose(logits[model], MODULE.apply(one, images), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# ROC and summary
# --------------------------------------------------------------------------------------------


def upper_concave_hull(x, y):
    """Vertices of the upper concave hull of points sorted by x (monotone chain; of points with the same
    x only the highest can be on it)."""
    x, y = np.asarray(x), np.asarray(y)
    last_of_each_x = np.append(x[1:] != x[:-1], True)
    hull = []
    for point in zip(x[last_of_each_x], y[last_of_each_x]):
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (point[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (point[0] - hull[-2][0])) >= 0:
            hull.pop()
        hull.append(point)
    return np.array(hull).T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_agrees_with_jax_privacy(seed):
    rng = np.random.default_rng(seed)
    # Rounded scores: many ties, inside and across the two sets.
    in_scores = np.round(rng.normal(0.7, 1, 700), 1)
    out_scores = np.round(rng.normal(0, 1, 900), 1)
    fpr, tpr = membership.roc_curve(in_scores, out_scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    # Each point is one threshold: the fractions of scores at or above it.
    for t in np.unique(np.concatenate([in_scores, out_scores]))[::7]:
        assert (np.mean(out_scores >= t), np.mean(in_scores >= t)) in set(zip(fpr, tpr))
    auditor = CanaryScoreAuditor(in_scores, out_scores)
    # jax_privacy may randomise between thresholds: its TPR is the curve's upper concave hull.
    assert (auditor.tpr_at_given_fpr(fpr) >= tpr - 1e-12).all()
    hull_fpr, hull_tpr = upper_concave_hull(fpr, tpr)
    np.testing.assert_allclose(auditor.tpr_at_given_fpr(hull_fpr), hull_tpr, atol=1e-12)
    grid = np.geomspace(1e-3, 1, 30)
    np.testing.assert_allclose(auditor.tpr_at_given_fpr(grid), np.interp(grid, hull_fpr, hull_tpr), atol=1e-12)
    np.testing.assert_allclose(auditor.attack_auroc(), np.trapezoid(hull_tpr, hull_fpr), atol=1e-12)
    # The curve's own area is the Mann-Whitney probability P[in > out] + P[tie] / 2.
    mann_whitney = ((in_scores[:, None] > out_scores[None]).mean()
                    + 0.5 * (in_scores[:, None] == out_scores[None]).mean())
    np.testing.assert_allclose(np.trapezoid(tpr, fpr), mann_whitney, atol=1e-12)
    summary = membership.attack_summary(in_scores, out_scores)
    assert summary["tpr_at_fpr_0.001"] == pytest.approx(float(auditor.tpr_at_given_fpr(0.001)))
    assert summary["tpr_at_fpr_0.01"] == pytest.approx(float(auditor.tpr_at_given_fpr(0.01)))
    assert summary["auc"] == pytest.approx(float(auditor.attack_auroc()))
    assert (summary["members"], summary["non_members"]) == (700, 900)


def test_summary_of_a_perfect_and_of_a_useless_attack():
    perfect = membership.attack_summary(np.arange(10.0) + 1000, np.arange(1000.0))
    assert perfect["tpr_at_fpr_0.001"] == 1.0 and perfect["auc"] == 1.0
    rng = np.random.default_rng(0)
    useless = membership.attack_summary(rng.normal(size=20000), rng.normal(size=20000))
    assert useless["tpr_at_fpr_0.01"] < 0.03 and abs(useless["auc"] - 0.5) < 0.02


def test_roc_and_summary_reject_bad_scores():
    for bad in [np.array([]), np.zeros((2, 2)), np.array([0.0, np.nan])]:
        with pytest.raises(ValueError):
            membership.roc_curve(bad, np.zeros(3))
        with pytest.raises(ValueError):
            membership.attack_summary(np.zeros(3), bad)
    with pytest.raises(ValueError, match="fprs"):
        membership.attack_summary(np.zeros(3), np.zeros(3), fprs=(1.5,))


# --------------------------------------------------------------------------------------------
# The experiment driver
# --------------------------------------------------------------------------------------------


def test_configs_use_the_committed_sizes():
    full, quick = experiment.CONFIGS["full"], experiment.CONFIGS["quick"]
    assert full.epsilons == quick.epsilons == (math.inf, 8.0, 1.0) and full.delta == 1e-5
    assert full.num_models >= 64 and quick.num_models < full.num_models
    for config in (full, quick):
        assert config.pool_examples % 2 == 0 and config.num_models % 2 == 0
        assert config.dp_expected_batch_size <= config.pool_examples // 2


@pytest.mark.parametrize("epsilon", [math.inf, 1.0])  # ε = 1: the quickest σ to calibrate at this q and T
def test_run_setting_on_tiny_data(epsilon):
    images, labels = tiny_pool(24)
    config = experiment.MembershipConfig(pool_examples=24, num_models=6, hidden_units=4, epochs=2, batch_size=4,
                                         dp_expected_batch_size=4.0, test_examples=10, roc_points=5)
    masks = membership.membership_masks(0, 6, 24)
    keys = jax.random.split(jax.random.key(0), 6)
    row = experiment.run_setting(MODULE, images, labels, images[:10], labels[:10], masks, keys, epsilon, config)
    for attack in ("lira", "lira_per_example_variance", "loss_threshold"):
        assert set(row[attack]) >= {"tpr_at_fpr_0.001", "tpr_at_fpr_0.01", "auc", "roc"}
        assert len(row[attack]["roc"]["fpr"]) == 5 and row[attack]["roc"]["fpr"][-1] == 1.0
        assert row[attack]["members"] == row[attack]["non_members"] == 72
    assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["train_accuracy"] <= 1
    if math.isinf(epsilon):
        assert row["noise_multiplier"] is None and row["epsilon"] == "inf"
    else:
        assert row["epsilon_spent"] <= 1.0 and row["noise_multiplier"] > 0
        assert row["sampling_rate"] == pytest.approx(1 / 3) and row["steps"] == 6
        assert row["dp_tpr_bound"]["tpr_at_fpr_0.001"] == pytest.approx(
            min(1.0, math.exp(row["epsilon_spent"]) * 0.001 + 1e-5))


def test_downsample_roc_is_the_staircase():
    fpr, tpr = np.array([0, 0.1, 0.1, 0.5, 1]), np.array([0, 0.2, 0.4, 0.9, 1])
    assert experiment.downsample_roc(fpr, tpr, [0.05, 0.1, 0.3, 1.0]) == [0.0, 0.4, 0.4, 1.0]


# --------------------------------------------------------------------------------------------
# The stored records (dpedu/results/membership_<mode>.json) meet the acceptance criteria
# --------------------------------------------------------------------------------------------


def committed_config(mode: str) -> dict:
    import dataclasses
    import json

    config = dataclasses.asdict(experiment.CONFIGS[mode])
    config["epsilons"] = ["inf" if math.isinf(e) else e for e in config["epsilons"]]
    return json.loads(json.dumps(config))


@pytest.mark.parametrize("mode", ["full", "quick"])
def test_stored_record_was_made_by_the_committed_command_and_config(mode):
    record = experiment.load_results(mode)
    assert record is not None, f"dpedu/results/membership_{mode}.json is missing"
    out = f"dpedu/results/membership_{mode}.json"
    assert record["command"] == f"python -m dpedu.experiments.membership --{mode} --out {out}"
    assert not record["git_commit"].endswith("-dirty")
    assert record["config"] == committed_config(mode) and record["mode"] == mode
    if mode == "full":
        assert record["data"] == "MNIST"
    config = record["config"]
    subset_size = config["pool_examples"] // 2
    rows = {row["epsilon"]: row for row in record["by_epsilon"]}
    assert list(rows) == config["epsilons"]
    for eps, row in rows.items():
        for attack in ("lira", "lira_per_example_variance", "loss_threshold"):
            assert row[attack]["members"] == row[attack]["non_members"] == config["num_models"] * subset_size
            assert len(row[attack]["roc"]["fpr"]) == len(row[attack]["roc"]["tpr"]) == config["roc_points"]
        if eps == "inf":
            assert row["noise_multiplier"] is None and row["train_accuracy"] > 0.99
            continue
        # The sampler that ran is the one accounted: Poisson at q = L / n for T steps.
        q, steps = membership.poisson_schedule(subset_size, config["dp_expected_batch_size"], config["epochs"])
        assert row["sampling_rate"] == q and row["steps"] == steps and row["epsilon_spent"] <= eps
        assert abs(row["realised_batch_size_mean"] - q * subset_size) < 1.0
        assert row["overflow_probability_per_step"] < 1e-8
        for fpr in membership.REPORTED_FPRS:
            assert row["dp_tpr_bound"][f"tpr_at_fpr_{fpr:g}"] == pytest.approx(
                min(1.0, math.exp(row["epsilon_spent"]) * fpr + config["delta"]))
    assert rows["inf"]["test_accuracy"] > rows[8.0]["test_accuracy"] > rows[1.0]["test_accuracy"]


def test_stored_full_record_meets_the_acceptance_criteria():
    record = experiment.load_results("full")
    assert record is not None, "dpedu/results/membership_full.json is missing"
    rows = {row["epsilon"]: row for row in record["by_epsilon"]}
    # Non-private: LiRA's TPR at 0.1 % FPR is far above chance (0.1 %), and far above the loss
    # threshold's (whose AUC is respectable but which is no better than chance there).
    assert rows["inf"]["lira"]["tpr_at_fpr_0.001"] >= 0.05
    assert rows["inf"]["loss_threshold"]["tpr_at_fpr_0.001"] < 0.005 < rows["inf"]["loss_threshold"]["auc"] - 0.5
    # ε = 1: every attack is near chance and within what (ε, δ)-DP allows.
    for attack in ("lira", "lira_per_example_variance", "loss_threshold"):
        row = rows[1.0]
        assert row[attack]["tpr_at_fpr_0.001"] <= row["dp_tpr_bound"]["tpr_at_fpr_0.001"]
        assert row[attack]["tpr_at_fpr_0.01"] <= row["dp_tpr_bound"]["tpr_at_fpr_0.01"]
        assert row[attack]["auc"] < 0.55
    assert rows[8.0]["lira"]["tpr_at_fpr_0.001"] < rows["inf"]["lira"]["tpr_at_fpr_0.001"] / 10
