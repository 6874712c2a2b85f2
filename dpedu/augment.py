"""Data augmentation for DP-SGD on CIFAR-10: random crops and flips, K copies per example.

De et al. 2022, "Unlocking High-Accuracy Differentially Private Image Classification through
Scale", §3.1 ("augmentation multiplicity", after Hoffer et al. 2019 and Fort et al. 2021): each
example is augmented K times — K independently augmented copies, the un-augmented original NOT
among them, as in their released jax_privacy code (``apply_augmult``) — and the K copies'
gradients are averaged BEFORE clipping (:func:`dpedu.clipping.mean_over_copies`). Each copy is a
random crop of the image padded by 4 pixels on every side by mirroring, then a horizontal flip
with probability 1/2.

The mirror padding is the one of De et al.'s code: the edge row/column is repeated
(``3 2 1 0 | 0 1 2 3 ...``; NumPy's ``"symmetric"`` mode), not NumPy's ``"reflect"``
(``4 3 2 1 | 0 1 2 ...``).

Augmentation uses only the example itself (and fresh randomness), so it does not change
sensitivity: one example still yields one clipped gradient.

Taught in notebooks/04_cifar10_ladder.ipynb.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dpedu._validation import check_steps


def random_crop_flip(key: jax.Array, image: jax.Array, *, padding: int = 4) -> jax.Array:
    """One augmented copy of one image: mirror-pad, random crop to the original size, random flip.

    De et al. 2022, §3.1 (the CIFAR-10 augmentations: random crop after 4-pixel padding,
    random horizontal flip), as their jax_privacy code does it.

    Args:
        key: PRNG key for this copy.
        image: ``[H, W, C]``.
        padding: mirror padding in pixels on each side (``0 <= padding <= min(H, W)``).

    Returns:
        ``[H, W, C]``: a crop at a uniformly random offset in ``{0, ..., 2·padding}²`` of the
        padded image, flipped left-right with probability 1/2.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    if image.ndim != 3:
        raise ValueError(f"image must have shape [H, W, C], got {image.shape}")
    if not isinstance(padding, int) or not 0 <= padding <= min(image.shape[:2]):
        raise ValueError(f"padding must be an integer in [0, {min(image.shape[:2])}], got {padding!r}")
    crop_key, flip_key = jax.random.split(key)
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode="symmetric")
    offset = jax.random.randint(crop_key, (2,), 0, 2 * padding + 1)
    crop = jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), image.shape)
    return jnp.where(jax.random.bernoulli(flip_key), crop[:, ::-1, :], crop)


@functools.partial(jax.jit, static_argnames=("k", "padding"))
def augmult(key: jax.Array, images: jax.Array, k: int, *, padding: int = 4) -> jax.Array:
    """K augmented copies of every image of a batch, each with its own key.

    De et al. 2022, §3.1 (augmentation multiplicity; K = 16 for their CIFAR-10 WRN results).
    Feed the result to :func:`dpedu.dpsgd.make_dp_step` with ``augmult=True``, which averages
    each example's K gradients before clipping.

    Formal guarantees:
        Copy ``(i, j)`` depends only on image ``i`` and its own key (split from ``key``): no
        example influences another's copies, so the per-example sensitivity argument of
        DP-SGD is unchanged.

    Edge cases: ``k == 1`` gives ordinary augmentation ``[B, 1, H, W, C]``; without augmentation
    use ``images[:, None]`` (K = 1, the original).

    Args:
        key: PRNG key for the whole batch (fresh each step).
        images: ``[B, H, W, C]``.
        k: copies per image, an integer ``>= 1``.
        padding: mirror padding before cropping (4 in De et al.).

    Returns:
        ``[B, K, H, W, C]``.

    Raises:
        ValueError: ``images`` not 4-D; ``k`` not an integer ``>= 1``; ``padding`` out of range.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    k = check_steps(k, "k")
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, H, W, C], got {images.shape}")
    batch = images.shape[0]
    keys = jax.random.split(key, batch * k)
    keys = keys.reshape((batch, k) + keys.shape[1:])
    one_copy = functools.partial(random_crop_flip, padding=padding)
    return jax.vmap(jax.vmap(one_copy, in_axes=(0, None)))(keys, images)
