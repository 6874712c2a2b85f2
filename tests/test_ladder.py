"""dpedu.ladder: one change per rung at every scale, the paper's settings, per-example models,
the σ/B signal-to-noise curve, and the runner's records (with a stand-in for training)."""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dpedu import accounting, ladder, models
from dpedu.configs import TrainConfig


@pytest.mark.parametrize("scale", ladder.SCALES)
def test_each_rung_changes_exactly_its_one_field(scale):
    configs = ladder.ladder_configs(scale)
    assert len(configs) == ladder.NUM_RUNGS == len(ladder.PAPER_VALIDATION_ACCURACY)
    for index in range(1, ladder.NUM_RUNGS):
        change = ladder.diff(configs[index - 1], configs[index])
        assert list(change) == [ladder.RUNG_FIELDS[index]], (index, change)
    first, last = configs[0], configs[-1]
    # The starting point has none of the techniques; the last rung has all of them.
    assert (first.norm, first.weight_standardization, first.augmult, first.ema) == ("none", False, 0, None)
    assert (last.norm, last.weight_standardization) == ("group", True)
    assert last.augmult >= 2 and 0 < last.ema < 1
    # Larger batch by virtual batching: several micro-batches per logical batch.
    assert configs[2].batch_size > configs[1].batch_size
    assert configs[2].batch_size % configs[2].microbatch_size == 0
    assert configs[2].batch_size // configs[2].microbatch_size >= 2
    for config in configs:  # what must NOT change along the ladder
        assert (config.target_epsilon, config.delta, config.l2_clip_norm) == (8.0, 1e-5, 1.0)
        assert (config.epochs, config.lr, config.sampler, config.seed) == (first.epochs, first.lr, "poisson", 0)
        assert config.dataset == "cifar10" and config.private


def test_paper_scale_uses_de_et_al_settings():
    configs = ladder.ladder_configs("paper")
    assert {c.model for c in configs} == {"wrn-40-4"}
    assert configs[-1].batch_size == 4096 and configs[-1].augmult == 16
    # De et al.'s released config: SGD without momentum, lr 2, C = 1; EMA decay 0.9999 (ours, unverified).
    assert (configs[-1].optimizer, configs[-1].lr, configs[-1].l2_clip_norm, configs[-1].ema) == ("sgd", 2.0, 1.0, 0.9999)
    # 2,500 updates of expected batch 4096 on the 50,000 training images.
    assert round(configs[-1].epochs / (4096 / 50_000)) == 2500
    assert all(c.source is None and c.train_examples is None for c in configs)  # official data


def test_colab_scale_keeps_the_full_training_set_and_epsilon():
    configs = ladder.ladder_configs("colab")
    assert {c.model for c in configs} == {"wrn-16-4"}
    assert all(c.train_examples is None and c.source is None and not c.quick for c in configs)


def _example_gradients(config, num_examples):
    """Per-example gradients one rung computes: expected examples seen, times augmented copies."""
    return config.epochs * num_examples * max(config.augmult, 1)


def test_quick_scale_is_the_packaged_cifar10_sample():
    configs = ladder.ladder_configs("quick")
    assert {c.model for c in configs} == {"wrn-tiny"}
    assert all(c.quick and c.source == "sample" and c.train_examples <= 1000 for c in configs)
    # At most 2,000 per-example gradients per rung: seconds on a CPU, after compilation.
    assert max(_example_gradients(c, c.train_examples) for c in configs) <= 2000


def test_cpu_scale_is_the_full_jpeg_copy_with_exact_pld_accounting_and_a_small_budget():
    configs = ladder.ladder_configs("cpu")
    assert {c.model for c in configs} == {"wrn-tiny"}
    for c in configs:
        assert c.source == "jpeg" and c.train_examples is None and c.test_examples is None and not c.quick
        # ε reported AND σ calibrated with PLD for Poisson sampling (no looser RDP σ).
        assert (c.sampler, c.accountant, c.calibration_accountant) == ("poisson", "pld", None)
    # The whole ladder: 200,000 per-example gradients on 50,000 images, about 20-25 minutes on
    # 2 cores (measured for WRN-10-1 in micro-batches of 32: 150-220 per second, plus compilation,
    # PLD calibration and evaluation on the 10,000 test images).
    assert sum(_example_gradients(c, 50_000) for c in configs) == 200_000


def test_diff_lists_before_and_after_and_ignores_labels():
    a = ladder.ladder_configs("quick")[0]
    assert ladder.diff(a, a) == {}
    b = dataclasses.replace(a, name="other", reference="other", lr=0.5, epochs=3.0)
    assert ladder.diff(a, b) == {"epochs": (a.epochs, 3.0), "lr": (a.lr, 0.5)}  # TrainConfig order
    with pytest.raises(ValueError, match="rung_b"):
        ladder.diff(a, {"lr": 1.0})


def test_unknown_scale_names_the_valid_ones():
    with pytest.raises(ValueError, match="'quick', 'cpu', 'colab', 'paper'"):
        ladder.ladder_configs("huge")


@pytest.mark.parametrize("text, expected", [("0-5", [0, 1, 2, 3, 4, 5]), ("3", [3]), ("0,2-3,2", [0, 2, 3])])
def test_parse_rungs(text, expected):
    assert ladder.parse_rungs(text) == expected


@pytest.mark.parametrize("text", ["", "a", "2-", "0-6", "-1"])
def test_parse_rungs_rejects_bad_input(text):
    with pytest.raises(ValueError, match="rungs"):
        ladder.parse_rungs(text)


def _module(config):
    """The module that training builds for ``config`` (dpedu.train: models.init_params)."""
    return models.get_model(config.model).make(**config.model_overrides())


def test_config_overrides_build_the_rung_architecture():
    configs = ladder.ladder_configs("quick")
    built = [(m.norm, m.weight_standardization) for m in map(_module, configs)]
    assert built == [("none", False), ("group", False), ("group", False), ("group", True),
                     ("group", True), ("group", True)]
    with pytest.raises(ValueError, match="Wide-ResNet"):
        TrainConfig(name="x", dataset="mnist", model="mnist-cnn", norm="group")
    with pytest.raises(ValueError, match="norm"):
        dataclasses.replace(configs[0], norm="batch")


# --- per-example models -------------------------------------------------------------------------
# tests/test_models.py checks the registered WRN with group norm AND weight standardisation (the
# ladder's rungs 3-5). Here: group norm WITHOUT weight standardisation (rungs 1-2), and a BatchNorm
# control showing that the same check catches a model that mixes examples.


class _BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=False)(x)
        return nn.Dense(10)(jnp.mean(nn.relu(x), axis=(1, 2)))


def _random_variables(module):
    """Random variables of the module's shapes: jax.eval_shape traces init without compiling it
    (compiling a WRN's initialisers takes tens of seconds on a busy CPU); any values will do here."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((3, 8, 8, 3), jnp.float32))
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(1.0, 0.3, s.shape), s.dtype), shapes)


def _first_example_gradient_shift(apply, params):
    """Relative change of example 0's gradient (batched forward pass) when the OTHER examples change."""
    @jax.jit
    def grad_of_first(p, images):
        def loss(p):
            logits = apply(p, images)
            return optax.softmax_cross_entropy_with_integer_labels(logits[:1], jnp.array([3]))[0]
        return jax.grad(loss)(p)

    keys = jax.random.split(jax.random.key(1), 2)
    # 8x8 images keep compilation short; the architecture does not depend on the image size.
    batch_a = jax.random.normal(keys[0], (3, 8, 8, 3))
    batch_b = batch_a.at[1:].set(jax.random.normal(keys[1], (2, 8, 8, 3)) * 4.0 + 1.0)
    grad_a, grad_b = (jax.tree_util.tree_leaves(grad_of_first(params, b)) for b in (batch_a, batch_b))
    scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in grad_a)
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(grad_a, grad_b)) / scale


def test_group_norm_without_weight_standardisation_is_per_example():
    configs = ladder.ladder_configs("quick")
    module = _module(configs[1])
    assert (module.norm, module.weight_standardization) == ("group", False)
    params = _random_variables(module)
    assert set(params) == {"params"}  # no batch statistics
    assert _first_example_gradient_shift(module.apply, params) < 1e-5
    # Rungs 3-5 train exactly the registered model that tests/test_models.py checks.
    assert _module(configs[3]) == models.get_model("wrn-tiny").make()


class _NormNet(nn.Module):
    """One convolution (weight-standardised or plain), optional group norm, pooling, logits."""

    weight_standardization: bool
    group_norm: bool

    @nn.compact
    def __call__(self, x):
        x = models.WSConv(16)(x) if self.weight_standardization else nn.Conv(16, (3, 3))(x)
        if self.group_norm:
            x = nn.GroupNorm(num_groups=16, epsilon=1e-5)(x)
        return nn.Dense(10)(jnp.mean(nn.relu(x), axis=(1, 2)))


@pytest.mark.parametrize("weight_standardization, group_norm", [(True, False), (False, True), (True, True)])
def test_weight_standardisation_and_group_norm_alone_are_per_example(weight_standardization, group_norm):
    module = _NormNet(weight_standardization, group_norm)
    params = _random_variables(module)
    assert set(params) == {"params"}
    assert _first_example_gradient_shift(module.apply, params) < 1e-5


def test_batch_norm_mixes_examples_so_the_check_has_teeth():
    module = _BatchNormNet()
    variables = _random_variables(module)

    def apply(p, x):  # training-mode BatchNorm: normalised with the statistics of THIS batch
        return module.apply({**p, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"])[0]

    assert _first_example_gradient_shift(apply, {"params": variables["params"]}) > 0.1


# --- signal-to-noise ----------------------------------------------------------------------------


def test_noise_to_signal_is_sigma_over_batch_with_calibrated_sigma():
    sizes = [256, 1024, 4096]
    sigmas, ratios = ladder.noise_to_signal(sizes, num_examples=50_000, epochs=20.0)
    np.testing.assert_allclose(ratios, sigmas / np.array(sizes))
    for size, sigma in zip(sizes, sigmas):
        q = size / 50_000
        steps = round(20.0 / q)
        assert sigma == accounting.calibrate_noise_multiplier(8.0, q, steps, 1e-5, "rdp")
        assert accounting.epsilon(sigma, q, steps, 1e-5, "rdp") <= 8.0
    # σ grows more slowly than B, so the noise per unit of signal falls as the batch grows.
    assert np.all(np.diff(sigmas) > 0) and np.all(np.diff(ratios) < 0)
    assert ratios[0] / ratios[-1] > 4


def test_noise_to_signal_rejects_a_batch_larger_than_the_data():
    with pytest.raises(ValueError, match="batch_sizes"):
        ladder.noise_to_signal([100], num_examples=50, epochs=1.0)


# --- runner and committed command (training replaced by a stand-in) ------------------------------


@pytest.fixture
def fake_train(monkeypatch):
    calls = []

    def train(config, dataset=None, **kwargs):
        assert dataset == "loaded once"
        calls.append(config)
        return {"config": config.name, "test_accuracy": 0.1 * len(calls), "epsilon": 7.9,
                "noise_multiplier": 1.2, "steps": 31, "device": "CPU: test", "wall_seconds": 1.5,
                "dataset": {"name": "CIFAR-10 (JPEG copy) (subset: 1,000 train / 500 test)"}, "seed": config.seed}

    loads = []
    # The function on the real module: whether dpedu.train was imported before must not matter.
    monkeypatch.setattr("dpedu.train.train", train)
    monkeypatch.setattr("dpedu.data.load_cifar10", lambda **kwargs: loads.append(kwargs) or "loaded once")
    yield calls
    assert len(loads) <= 1


def test_run_ladder_adds_rung_change_and_paper_number(fake_train):
    records = ladder.run_ladder("quick", "1-2")
    assert [c.name for c in fake_train] == ["ladder-quick-rung1", "ladder-quick-rung2"]
    assert [r["rung"] for r in records] == [1, 2]
    assert records[0]["change"] == {"norm": ["none", "group"]}
    assert records[1]["change"] == {"batch_size": [64, 128]}
    assert [r["paper_validation_accuracy"] for r in records] == [66.3, 70.0]
    assert records[1]["test_accuracy"] == pytest.approx(0.2) and records[1]["wall_seconds"] == 1.5


def test_command_writes_a_record_with_provenance(fake_train, tmp_path):
    from dpedu.experiments import ladder as command

    out = tmp_path / "sub" / "ladder.json"
    assert command.main(["--scale", "quick", "--rungs", "0,5", "--out", str(out)]) == 0
    stored = json.loads(out.read_text())
    assert stored["scale"] == "quick" and [r["rung"] for r in stored["rungs"]] == [0, 5]
    assert stored["dataset"].startswith("CIFAR-10 (JPEG copy)")
    for key in ("git_commit", "device", "date", "wall_seconds", "seed", "load_average_1min", "load_average_at_start"):
        assert key in stored
    assert stored["command"] == f"python -m dpedu.experiments.ladder --scale quick --rungs 0,5 --out {out}"
    assert stored["paper_validation_accuracy"] == list(ladder.PAPER_VALIDATION_ACCURACY)


def test_command_reports_bad_rungs_in_one_line(fake_train, tmp_path, capsys):
    from dpedu.experiments import ladder as command

    assert command.main(["--scale", "quick", "--rungs", "7", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "rungs" in err and "Traceback" not in err and not fake_train


def test_load_results_reads_what_the_command_wrote(fake_train, tmp_path):
    from dpedu.experiments import ladder as command

    assert ladder.load_results("colab", tmp_path) is None  # nothing stored: nothing shown
    assert command.main(["--scale", "colab", "--rungs", "2", "--out", str(tmp_path / "ladder_colab.json")]) == 0
    assert [r["rung"] for r in ladder.load_results("colab", tmp_path)["rungs"]] == [2]
