"""Configs: every registered experiment and its quick variant are valid, small, and as the papers say."""

import dataclasses

import pytest

from dpedu import configs, models


@pytest.mark.parametrize("name", sorted(configs.CONFIGS))
def test_every_config_and_quick_variant_is_valid_and_quick_is_small(name):
    full = configs.get_config(name)
    quick = configs.get_config(name, quick=True)
    assert full.name == quick.name == name and not full.quick and quick.quick
    assert full.model in models.MODELS and full.sampler == "poisson" and full.accountant == "pld"
    assert full.train_examples is None and full.test_examples is None  # full runs use all the data
    assert quick.train_examples <= 5000 and quick.test_examples <= 1000 and quick.epochs <= 2
    assert round(quick.epochs * quick.train_examples / quick.batch_size) <= 100  # steps
    assert dataclasses.replace(full, seed=1).seed == 1  # replace-friendly


def test_paper_hyper_parameters():
    cnn = configs.get_config("mnist-cnn")  # Tramèr & Boneh 2021
    assert (cnn.batch_size, cnn.lr, cnn.optimizer, cnn.momentum, cnn.l2_clip_norm) == (512, 0.5, "momentum", 0.9, 0.1)
    assert (cnn.target_epsilon, cnn.delta) == (3.0, 1e-5)
    abadi = configs.get_config("mnist-abadi")  # Abadi et al. 2016, medium noise
    assert (abadi.batch_size, abadi.l2_clip_norm, abadi.pca, abadi.pca_dims, abadi.pca_noise_multiplier) == (
        600, 4.0, "dp", 60, 7.0)
    assert (abadi.lr, abadi.lr_schedule, abadi.lr_end, abadi.lr_decay_epochs) == (0.1, "linear", 0.052, 10.0)
    wrn = configs.get_config("cifar10-wrn-16-4-eps1")  # De et al. 2022 / jax_privacy config
    assert (wrn.batch_size, wrn.lr, wrn.l2_clip_norm, wrn.augmult, wrn.ema) == (4096, 2.0, 1.0, 16, 0.999)
    assert round(wrn.epochs * 50_000 / wrn.batch_size) == 875


@pytest.mark.parametrize("changes, match", [
    (dict(sampler="fixed"), "sampler"),
    (dict(accountant="moments"), "accountant"),
    (dict(target_epsilon=0.0), "target_epsilon"),
    (dict(target_epsilon=-1.0), "target_epsilon"),
    (dict(target_epsilon=None), "target_epsilon"),
    (dict(private=False), "target_epsilon must be None"),
    (dict(delta=1.0), "delta"),
    (dict(batch_size=0), "batch_size"),
    (dict(epochs=0.0), "epochs"),
    (dict(l2_clip_norm=0.0), "l2_clip_norm"),
    (dict(augmult=4), "augmult must be 0 for mnist"),
    (dict(ema=1.0), "ema"),
    (dict(pca="dp", pca_noise_multiplier=7.0), "pca"),
    (dict(norm="group"), "Wide-ResNets only"),
    (dict(model="nope"), "mnist-cnn"),
    (dict(dataset="svhn"), "dataset"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(lr_schedule="linear"), "lr_end"),
    (dict(clipping_method="nope"), "clipping_method must be one of None, 'per_example', 'two_pass', 'ghost'"),
    (dict(norm_chunk_size=0), "norm_chunk_size must be None or an integer >= 1"),
])
def test_bad_values_raise_naming_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(configs.get_config("mnist-cnn"), **changes)


def test_pca_rules():
    abadi = configs.get_config("mnist-abadi")
    with pytest.raises(ValueError, match="pca"):
        dataclasses.replace(abadi, pca=None)
    with pytest.raises(ValueError, match="pca_noise_multiplier"):
        dataclasses.replace(abadi, pca_noise_multiplier=0.0)
    with pytest.raises(ValueError, match="private=True"):
        dataclasses.replace(abadi, private=False, target_epsilon=None)
    public = configs.get_config("mnist-abadi-pca-public")
    assert public.pca == "public" and public.public_examples == 10_000
    assert dataclasses.replace(public, private=False, target_epsilon=None).private is False


def test_non_private_baseline_and_wrn_overrides():
    baseline = dataclasses.replace(configs.get_config("mnist-cnn"), private=False, target_epsilon=None)
    assert not baseline.private and baseline.model_overrides() == {}
    wrn = dataclasses.replace(configs.get_config("cifar10-wrn-16-4-eps1"), norm="none", weight_standardization=False)
    assert wrn.model_overrides() == {"norm": "none", "weight_standardization": False}


def test_unknown_name_lists_valid_ones_and_names_are_unique():
    names = "mnist-abadi, mnist-abadi-ema, mnist-abadi-large-noise, mnist-abadi-pca-public, mnist-abadi-small-noise, mnist-abadi-small-noise-ema, mnist-cnn"
    with pytest.raises(ValueError, match=names) as err:
        configs.get_config("nope")
    assert "'nope'" in str(err.value)
    with pytest.raises(ValueError, match="already registered"):
        configs.register(configs.get_config("mnist-cnn"), quick={})


def test_clipping_method_defaults_to_the_models_measured_faster_one():
    assert configs.get_config("mnist-abadi").clipping() == configs.CLIPPING_BY_MODEL["mnist-mlp-pca"]
    assert configs.get_config("mnist-abadi", quick=True).clipping() == ("ghost", None)
    assert configs.get_config("mnist-cnn").clipping() == ("ghost", None)
    assert configs.get_config("cifar10-cnn").clipping() == ("ghost", None)
    assert configs.get_config("cifar10-wrn-16-4-eps1").clipping() == ("per_example", None)
    chosen = dataclasses.replace(configs.get_config("mnist-cnn"), clipping_method="two_pass")
    assert chosen.clipping() == ("two_pass", None)
    chunked = dataclasses.replace(configs.get_config("mnist-abadi"), clipping_method="two_pass", norm_chunk_size=32)
    assert chunked.clipping() == ("two_pass", 32)
    assert configs.clipping_for("wrn-tiny", "per_example", None) == ("per_example", None)
