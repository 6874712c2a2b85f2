"""dpedu.augment: each copy is a mirror-padded random crop, maybe flipped; K copies per example."""

import jax
import numpy as np
import pytest

from dpedu.augment import augmult


def _all_augmentations(image, padding=4):
    """Every crop offset and flip of ``image``, as De et al.'s code pads it (edge repeated)."""
    h, w, _ = image.shape
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode="symmetric")
    out = {}
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[dy:dy + h, dx:dx + w]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop[:, ::-1]
    return out


def test_every_copy_is_a_padded_crop_possibly_flipped_and_copies_differ():
    images = np.random.default_rng(0).normal(size=(3, 8, 8, 2)).astype(np.float32)  # distinct pixels
    copies = np.asarray(augmult(jax.random.key(0), images, 4))
    assert copies.shape == (3, 4, 8, 8, 2) and copies.dtype == np.float32
    for i in range(3):
        candidates = _all_augmentations(images[i])
        for j in range(4):
            # Offsets 0 and 2·padding give a mirror-symmetric window, whose flip is itself: at
            # most two (offset, flip) pairs can produce the same copy.
            matches = [t for t, c in candidates.items() if np.array_equal(c, copies[i, j])]
            assert 1 <= len(matches) <= 2, (i, j)
        assert len({copies[i, j].tobytes() for j in range(4)}) > 1  # K independent copies


def test_padding_repeats_the_edge_pixel_as_de_et_al():
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="symmetric")
    assert padded[3, 4, 0] == image[0, 0, 0]  # row above the image repeats row 0
    # The top-left crop (offset 0, 0) of a 4x4 image is entirely padding: mirror of the image.
    candidates = _all_augmentations(image)
    np.testing.assert_array_equal(candidates[(0, 0, False)][:, :, 0], image[::-1, ::-1, 0])


def test_offsets_and_flips_are_uniform_and_keys_are_per_example():
    # Many copies of ONE image: identify each copy's (offset, flip) and check their frequencies.
    image = np.random.default_rng(1).normal(size=(6, 6, 1)).astype(np.float32)
    images = np.repeat(image[None], 200, axis=0)
    copies = np.asarray(augmult(jax.random.key(3), images, 5)).reshape(-1, 6, 6, 1)
    lookup = {}
    for t, c in _all_augmentations(image).items():
        lookup.setdefault(c.tobytes(), []).append(t)
    found = [lookup[c.tobytes()] for c in copies]  # KeyError if a copy is no valid augmentation
    # Flip frequency among copies whose flip is identifiable (horizontal offset not 0 or 8).
    flips = [ts[0][2] for ts in found if len(ts) == 1]
    assert abs(np.mean(flips) - 0.5) < 4 * np.sqrt(0.25 / len(flips))
    dy_counts = np.bincount([ts[0][0] for ts in found], minlength=9)
    expected = len(found) / 9
    assert np.all(np.abs(dy_counts - expected) < 5 * np.sqrt(expected))  # 9 vertical offsets, uniform
    assert len({c.tobytes() for c in copies[:50]}) > 25  # identical images, different keys


def test_k_one_and_determinism_and_bad_arguments():
    images = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype(np.float32)
    one = augmult(jax.random.key(5), images, 1)
    assert one.shape == (2, 1, 8, 8, 3)
    np.testing.assert_array_equal(one, augmult(jax.random.key(5), images, 1))
    with pytest.raises(ValueError, match="k must"):
        augmult(jax.random.key(0), images, 0)
    with pytest.raises(ValueError, match="images"):
        augmult(jax.random.key(0), images[0], 2)
    with pytest.raises(ValueError, match="padding"):
        augmult(jax.random.key(0), images, 2, padding=9)
