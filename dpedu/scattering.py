"""Handcrafted features for private learning: the 2-D scattering transform, in JAX.

The scattering transform (Mallat 2012, "Group Invariant Scattering"; Bruna & Mallat 2013,
"Invariant Scattering Convolution Networks") is a fixed, non-learned cascade of wavelet
convolutions and complex moduli, averaged by a low-pass filter ``φ_J``:

* order 0: ``x ⋆ φ_J``;
* order 1: ``|x ⋆ ψ_λ₁| ⋆ φ_J`` for the ``J·L`` Morlet wavelets ``ψ_λ``, ``λ = (j, θ)``, scales
  ``0 ≤ j < J``, ``L`` orientations;
* order 2: ``||x ⋆ ψ_λ₁| ⋆ ψ_λ₂| ⋆ φ_J`` for ``j₁ < j₂``.

Each output is subsampled by ``2^J``: a ``H×W`` image gives ``K = 1 + J·L + L²·J(J−1)/2``
channels of size ``(H // 2^J, W // 2^J)`` — with Oyallon & Mallat (2015, "Deep Roto-Translation
Scattering for Object Classification")'s ``J = 2, L = 8`` (the setting of Tramèr & Boneh 2021,
"Differentially Private Learning Needs Better Features (or Much More Data)", §3): ``K = 81`` per
input channel at ``(H/4, W/4)``, i.e. ``81×7×7`` for MNIST and ``3·81×8×8`` for CIFAR-10.

This module computes exactly what kymatio's ``Scattering2D`` (Andreux et al. 2020, v0.3)
computes — the same Morlet filter bank, built in NumPy the way kymatio builds it (including its
constants), the same reflect padding, Fourier-domain subsampling and unpadding, the same channel
order — but in JAX: one jitted function of a whole batch, the orientations of each scale
computed together. ``tests/test_scattering.py`` checks it against kymatio's NumPy frontend on
real MNIST and CIFAR-10 images. (kymatio itself is not a dependency: its last release, 0.3.0 of
2022, cannot be imported as ``kymatio.numpy`` / ``kymatio.jax`` with SciPy >= 1.17, which removed
``scipy.special.sph_harm`` that its 3-D module imports; kymatio issue #1068.)

Below the transform, the two ways Tramèr & Boneh normalise the features before a linear model
(their §3, "Normalization", and their code, github.com/ftramer/Handcrafted-DP): per-example
group normalisation (:func:`group_normalize`, no privacy cost) and "data normalisation" with a
privately estimated mean and variance per channel (:func:`private_channel_moments`). Their code
clips the per-example statistics at the median of the private data without accounting for it;
here that median is itself found by a DP search between data-independent limits
(:func:`private_quantile`, :func:`channel_bounds`), and :func:`normalization_dp_event` accounts
for everything the normalisation releases.

Taught in notebooks/07_features.ipynb.
"""

from __future__ import annotations

import functools
import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np

from dpedu._validation import check_noise_multiplier
from dpedu.progress import progress as _progress_bar

__all__ = [
    "DEFAULT_J",
    "DEFAULT_L",
    "padded_shape",
    "output_shape",
    "num_channels",
    "filter_bank",
    "scattering2d",
    "scatter_images",
    "channel_bounds",
    "channel_moments",
    "private_channel_moments",
    "private_quantile",
    "normalization_dp_event",
    "standardize",
    "group_normalize",
]

# Tramèr & Boneh 2021 (§3; data.py of their code: kymatio's Scattering2D(J=2, shape), L = 8 default).
DEFAULT_J = 2
DEFAULT_L = 8

# kymatio's filter_bank.gabor_2d divides by 2 * 3.1415 * sigma**2 / slant (not 2π): kept, so that
# the features equal kymatio's (the filters' scale differs from a 2π normalisation by 3e-5 relative).
_KYMATIO_PI = 3.1415


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def _check_J_L(J, L, max_order=2) -> tuple[int, int, int]:
    for name, value in (("J", J), ("L", L)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(max_order, bool) or max_order not in (1, 2):
        raise ValueError(f"max_order must be 1 or 2, got {max_order!r}")
    return int(J), int(L), int(max_order)


def _check_shape(shape, J: int) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (height, width), got {shape!r}") from None
    if height < 2 ** J or width < 2 ** J:
        raise ValueError(f"the scattering transform with J={J} needs images of at least 2^J = {2 ** J} pixels "
                         f"in each direction, got {height}x{width}")
    return height, width


def padded_shape(shape, J: int = DEFAULT_J) -> tuple[int, int]:
    """The size an image is reflect-padded to before its FFTs (kymatio's ``compute_padding``).

    ``(H, W) -> ((H + 2^J) // 2^J + 1) · 2^J, ...)``: a multiple of ``2^J`` at least ``2^J`` larger
    (28 → 36, 32 → 40 for ``J = 2``), so the circular convolutions see mirrored borders, not the
    opposite edge.

    Raises:
        ValueError: ``J`` not an integer >= 1, or ``shape`` smaller than ``2^J``.
    """
    J, _, _ = _check_J_L(J, 1)
    height, width = _check_shape(shape, J)
    return tuple(((size + 2 ** J) // 2 ** J + 1) * 2 ** J for size in (height, width))


def output_shape(shape, J: int = DEFAULT_J) -> tuple[int, int]:
    """Spatial size of every scattering channel: ``(H // 2^J, W // 2^J)`` (7x7 for MNIST, 8x8 for CIFAR-10)."""
    padded = padded_shape(shape, J)
    return tuple(size // 2 ** J - 2 for size in padded)


def num_channels(J: int = DEFAULT_J, L: int = DEFAULT_L, max_order: int = 2) -> int:
    """Channels per input channel: ``1 + J·L`` (order 1) ``+ L²·J(J−1)/2`` (order 2); 81 for J = 2, L = 8."""
    J, L, max_order = _check_J_L(J, L, max_order)
    return 1 + J * L + (L * L * J * (J - 1) // 2 if max_order == 2 else 0)


# --------------------------------------------------------------------------------------------
# The Morlet filter bank (as kymatio.scattering2d.filter_bank builds it)
# --------------------------------------------------------------------------------------------


def _gabor_2d(M: int, N: int, sigma: float, theta: float, xi: float, slant: float = 1.0) -> np.ndarray:
    """kymatio's ``gabor_2d``: a Gaussian envelope times ``e^{i ξ·u}``, periodised over 5x5 copies."""
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
    rotation_inv = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]], np.float32)
    curvature = rotation @ np.diag([1.0, slant * slant]) @ rotation_inv / (2 * sigma * sigma)
    gabor = np.zeros((M, N), np.complex128)
    for ex in range(-2, 3):
        for ey in range(-2, 3):
            xx, yy = np.mgrid[ex * M:M + ex * M, ey * N:N + ey * N]
            arg = (-(curvature[0, 0] * xx * xx + (curvature[0, 1] + curvature[1, 0]) * xx * yy
                     + curvature[1, 1] * yy * yy)
                   + 1j * (xx * xi * np.cos(theta) + yy * xi * np.sin(theta)))
            gabor += np.exp(arg)
    return gabor / (2 * _KYMATIO_PI * sigma * sigma / slant)


def _morlet_2d(M: int, N: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """kymatio's ``morlet_2d``: a Gabor filter minus a multiple of its envelope, so it has zero mean."""
    wave = _gabor_2d(M, N, sigma, theta, xi, slant)
    envelope = _gabor_2d(M, N, sigma, theta, 0.0, slant)
    return wave - np.sum(wave) / np.sum(envelope) * envelope


def _periodize(filter_fourier: np.ndarray, res: int) -> np.ndarray:
    """kymatio's ``periodize_filter_fft``: the filter for a signal subsampled by ``2^res``.

    The frequencies above the new Nyquist band are zeroed, then the spectrum is folded (summed
    over its ``2^res × 2^res`` shifted copies), which is what subsampling does in Fourier.
    """
    M, N = filter_fourier.shape
    k = 2 ** res
    masked = filter_fourier.copy()
    start_x, len_x = int(M * 2 ** (-res - 1)), int(M * (1 - 2 ** (-res)))
    start_y, len_y = int(N * 2 ** (-res - 1)), int(N * (1 - 2 ** (-res)))
    masked[start_x:start_x + len_x, :] = 0
    masked[:, start_y:start_y + len_y] = 0
    return masked.reshape(k, M // k, k, N // k).sum(axis=(0, 2))


@functools.lru_cache(maxsize=16)
def _filter_bank(M: int, N: int, J: int, L: int) -> dict:
    psi = []
    for j in range(J):
        for theta in range(L):
            spatial = _morlet_2d(M, N, 0.8 * 2 ** j, (int(L - L / 2 - 1) - theta) * np.pi / L,
                                 3.0 / 4.0 * np.pi / 2 ** j, 4.0 / L)
            fourier = np.real(np.fft.fft2(spatial))  # real: the filters are symmetric in space
            levels = tuple(_periodize(fourier, res).astype(np.float32) for res in range(min(j + 1, max(J - 1, 1))))
            psi.append({"j": j, "theta": theta, "levels": levels})
    phi_fourier = np.real(np.fft.fft2(_gabor_2d(M, N, 0.8 * 2 ** (J - 1), 0.0, 0.0)))
    phi = {"j": J, "levels": tuple(_periodize(phi_fourier, res).astype(np.float32) for res in range(J))}
    for level in (*phi["levels"], *(level for p in psi for level in p["levels"])):
        level.setflags(write=False)
    return {"phi": phi, "psi": tuple(psi)}


def filter_bank(padded: tuple[int, int], J: int = DEFAULT_J, L: int = DEFAULT_L) -> dict:
    """The Morlet filter bank in Fourier, in kymatio's layout (``kymatio.scattering2d.filter_bank``).

    Oyallon & Mallat 2015 / kymatio: wavelet ``(j, θ)`` is a Morlet filter with envelope width
    ``σ = 0.8·2^j``, slant ``4/L``, centre frequency ``ξ = 3π/4 / 2^j`` at angle
    ``(L/2 − 1 − θ)·π/L``; the low-pass ``φ`` is a Gaussian of width ``0.8·2^(J−1)``. Each filter
    is stored at every resolution it is applied at (``levels[res]``: the filter for a signal
    already subsampled by ``2^res``).

    Args:
        padded: the padded image size ``(M, N)`` (:func:`padded_shape`), each a multiple of ``2^J``.
        J: number of scales, >= 1.
        L: number of orientations, >= 1 (the filters are designed for L = 8).

    Returns:
        ``{"phi": {"j": J, "levels": (J arrays)}, "psi": (J·L dicts {"j", "theta", "levels"})}``,
        float32 read-only arrays (cached per ``(M, N, J, L)``).

    Raises:
        ValueError: ``J`` or ``L`` not an integer >= 1, or ``padded`` not multiples of ``2^J``.
    """
    J, L, _ = _check_J_L(J, L)
    M, N = _check_shape(padded, J)
    if M % 2 ** J or N % 2 ** J:
        raise ValueError(f"padded must be multiples of 2^J = {2 ** J}, got {padded!r} (use padded_shape)")
    return _filter_bank(M, N, J, L)


# --------------------------------------------------------------------------------------------
# The transform
# --------------------------------------------------------------------------------------------


def _subsample_fourier(x: jax.Array, k: int) -> jax.Array:
    """Spatial subsampling by ``k`` done in Fourier (kymatio's ``subsample_fourier``): fold the spectrum."""
    if k == 1:
        return x
    *lead, M, N = x.shape
    return x.reshape(*lead, k, M // k, k, N // k).mean(axis=(-4, -2))


def _fft_modulus_fft(x_fourier: jax.Array) -> jax.Array:
    """``fft2(|ifft2(x)|)``: the modulus non-linearity, taken in space, back to Fourier."""
    return jnp.fft.fft2(jnp.abs(jnp.fft.ifft2(x_fourier)))


def _lowpass(x_fourier: jax.Array, phi: jax.Array, k: int) -> jax.Array:
    """``x ⋆ φ`` subsampled by ``k``, back in space, with kymatio's one-pixel unpadding."""
    return jnp.real(jnp.fft.ifft2(_subsample_fourier(x_fourier * phi, k)))[..., 1:-1, 1:-1]


def _scattering_batch(x: jax.Array, J: int, L: int, max_order: int) -> jax.Array:
    """``[B, H, W]`` float32 -> ``[B, K, H // 2^J, W // 2^J]``: kymatio's ``scattering2d`` core,
    vectorised over the L orientations of each scale."""
    batch, height, width = x.shape
    M, N = padded_shape((height, width), J)
    bank = _filter_bank(M, N, J, L)
    phi = [jnp.asarray(level) for level in bank["phi"]["levels"]]
    # psi_levels[j][res]: the L filters of scale j at resolution res, [L, M / 2^res, N / 2^res]
    psi_levels = [[jnp.asarray(np.stack([p["levels"][res] for p in bank["psi"] if p["j"] == j]))
                   for res in range(len(bank["psi"][j * L]["levels"]))] for j in range(J)]

    top, left = (M - height) // 2, (N - width) // 2
    padded = jnp.pad(x, ((0, 0), (top, M - height - top), (left, N - width - left)), mode="reflect")
    u0 = jnp.fft.fft2(padded.astype(jnp.complex64))  # [B, M, N]

    order0 = _lowpass(u0, phi[0], 2 ** J)[:, None]  # [B, 1, h, w]
    order1, order2 = [], []
    for j1 in range(J):
        u1 = _fft_modulus_fft(_subsample_fourier(u0[:, None] * psi_levels[j1][0], 2 ** j1))  # [B, L, M/2^j1, .]
        order1.append(_lowpass(u1, phi[j1], 2 ** (J - j1)))  # [B, L, h, w]
        if max_order < 2 or j1 == J - 1:
            continue
        blocks = []
        for j2 in range(j1 + 1, J):
            u2 = _fft_modulus_fft(_subsample_fourier(u1[:, :, None] * psi_levels[j2][j1], 2 ** (j2 - j1)))
            blocks.append(_lowpass(u2, phi[j2], 2 ** (J - j2)))  # [B, L(θ1), L(θ2), h, w]
        # kymatio's order: θ1, then (j2, θ2)
        block = jnp.concatenate(blocks, axis=2)
        order2.append(block.reshape(batch, -1, *block.shape[-2:]))
    return jnp.concatenate([order0, *order1, *order2], axis=1)


@functools.partial(jax.jit, static_argnames=("J", "L", "max_order"))
def _scattering2d_jit(x, J, L, max_order):
    lead, (height, width) = x.shape[:-2], x.shape[-2:]
    out = _scattering_batch(x.reshape(-1, height, width).astype(jnp.float32), J, L, max_order)
    return out.reshape(*lead, *out.shape[1:])


def scattering2d(x, J: int = DEFAULT_J, L: int = DEFAULT_L, max_order: int = 2) -> jax.Array:
    """The 2-D scattering transform of each ``H×W`` image in ``x``, as kymatio computes it.

    Mallat 2012; Bruna & Mallat 2013; Oyallon & Mallat 2015 (the Morlet filters and J = 2, L = 8
    that Tramèr & Boneh 2021 use). Equal to ``kymatio.numpy.Scattering2D(J, (H, W), L,
    max_order)(x)`` up to float32 rounding (checked to 1e-4 of the feature scale in the tests):
    reflect padding to :func:`padded_shape`, convolutions as products in Fourier, subsampling by
    folding the spectrum, one pixel unpadded on each side. Jitted (compiled once per input shape,
    ``J``, ``L`` and ``max_order``); any leading axes are batch axes.

    Formal guarantees:
        A fixed map: the filters depend only on ``(H, W, J, L)``, never on data, and each image's
        features depend only on that image. Applying it to every example before training is
        therefore free in privacy terms: DP-SGD on the features has the same guarantee as on the
        images (per-example clipping acts on gradients with respect to the model's parameters).
        The features are not guaranteed to be a non-expansive map of the image: kymatio's Morlet
        filters do not form a tight frame (:func:`channel_bounds` gives proven sup bounds instead).

    Edge cases: computed in float32 whatever the input dtype (integers and float64 are cast); a
    non-finite pixel makes every feature of its image non-finite (the FFT mixes all pixels).

    Args:
        x: real array ``[..., H, W]`` with ``H, W >= 2^J``; e.g. ``[B, H, W]``, or ``[B, C, H, W]``
            for images with C channels (each channel transformed separately, as kymatio does).
        J: number of scales (the output is subsampled by ``2^J``), >= 1.
        L: number of orientations, >= 1.
        max_order: 1 (orders 0 and 1) or 2.

    Returns:
        float32 ``[..., K, H // 2^J, W // 2^J]`` with ``K = num_channels(J, L, max_order)``, the
        channels in kymatio's order: order 0; order 1 by ``(j, θ)``; order 2 by ``(j₁, θ₁, j₂, θ₂)``.

    Raises:
        ValueError: ``x`` has fewer than 2 dimensions, is complex or not numeric, or is smaller
            than ``2^J`` in a spatial direction; ``J``, ``L`` or ``max_order`` out of range.

    Taught in notebooks/07_features.ipynb.
    """
    J, L, max_order = _check_J_L(J, L, max_order)
    if not hasattr(x, "dtype"):
        x = np.asarray(x)
    shape, dtype = np.shape(x), x.dtype
    if len(shape) < 2:
        raise ValueError(f"x must have shape [..., H, W] (at least 2 dimensions), got shape {shape}")
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"x must be real (float or integer), got dtype {dtype}")
    _check_shape(shape[-2:], J)
    return _scattering2d_jit(jnp.asarray(x), J, L, max_order)


def scatter_images(images, J: int = DEFAULT_J, L: int = DEFAULT_L, max_order: int = 2, *,
                   batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Scattering features of NHWC images (as :mod:`dpedu.data` loads them), as NHWC features.

    Each of the ``C`` channels is transformed separately (:func:`scattering2d`) and the ``K``
    channels of each are stacked: output channel ``c·K + k`` is channel ``k`` of input channel
    ``c`` — the layout of Tramèr & Boneh's ``scattering(x).view(-1, C·K, h, w)``, moved to the last
    axis. Computed in chunks of ``batch_size`` images (the last one zero-padded, so one compiled
    shape serves all), returned on the host.

    Formal guarantees: as :func:`scattering2d` (a fixed per-example map; no privacy cost).

    Args:
        images: ``[N, H, W, C]`` real, finite.
        J, L, max_order: as :func:`scattering2d`.
        batch_size: images per compiled call (memory: roughly 1 MB per image and channel at
            32x32, J = 2, L = 8; 256 is as fast as larger chunks on 2 CPU cores).
        progress: show a progress bar (:mod:`dpedu.progress`).

    Returns:
        float32 NumPy ``[N, H // 2^J, W // 2^J, C·K]``.

    Raises:
        ValueError: ``images`` not 4-dimensional, empty, not finite, or too small;
            ``batch_size`` < 1; as :func:`scattering2d`.

    Taught in notebooks/07_features.ipynb.
    """
    J, L, max_order = _check_J_L(J, L, max_order)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape [N >= 1, H, W, C] (NHWC), got {images.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images must be finite (a NaN or inf pixel would make all its image's features NaN)")
    count, height, width, channels = images.shape
    h, w = output_shape((height, width), J)
    k = num_channels(J, L, max_order)
    chunk = min(int(batch_size), count)
    out = np.empty((count, h, w, channels * k), np.float32)
    starts = range(0, count, chunk)
    for start in _progress_bar(starts, desc="scattering", unit="chunk", **({} if progress else {"disable": True})):
        block = images[start:start + chunk].astype(np.float32, copy=False)
        n = len(block)
        if n < chunk:
            block = np.concatenate([block, np.zeros((chunk - n, *block.shape[1:]), np.float32)])
        features = scattering2d(np.moveaxis(block, -1, 1), J, L, max_order)  # [chunk, C, K, h, w]
        features = jnp.moveaxis(features, (1, 2), (3, 4)).reshape(chunk, h, w, channels * k)
        out[start:start + n] = np.asarray(features[:n])
    return out


# --------------------------------------------------------------------------------------------
# Normalising the features (Tramèr & Boneh 2021, §3)
# --------------------------------------------------------------------------------------------


def _spatial_l1_norm(level) -> float:
    """``‖h‖₁`` of the spatial (circular) kernel of one Fourier filter ``[M, N]``."""
    return float(np.abs(np.fft.ifft2(np.asarray(level, np.float64))).sum())


def channel_bounds(shape, input_bound=1.0, J: int = DEFAULT_J, L: int = DEFAULT_L, max_order: int = 2) -> np.ndarray:
    """Proven, data-independent bounds ``B_k ≥ |S_k x(u)|`` on every scattering feature.

    If every pixel has ``|x| ≤ R`` then, channel by channel (Young's inequality for the circular
    convolutions that :func:`scattering2d` computes in Fourier, ``sup|y ⋆ h| ≤ sup|y|·‖h‖₁``;
    reflect padding, the modulus, subsampling and unpadding never increase the sup):

    * order 0: ``|x ⋆ φ| ≤ R‖φ‖₁``;
    * order 1: ``||x ⋆ ψ_λ₁| ⋆ φ| ≤ R‖ψ_λ₁‖₁‖φ‖₁``;
    * order 2: ``R‖ψ_λ₁‖₁‖ψ_λ₂‖₁‖φ‖₁``,

    each ``‖·‖₁`` the l1 norm of the spatial kernel at the resolution the filter is applied at.
    For J = 2, L = 8 every ``B_k`` is within 3 % of ``R`` (MNIST's brightest strokes reach 0.98 of
    it in order 0), so the bounds are tight for single pixels but not for data-set statistics:
    the typical channel mean on MNIST is below 1 % of its bound. :func:`private_channel_moments`
    therefore uses them only as the data-independent upper end of its clipping-radius search.

    Args:
        shape: image size ``(H, W)``.
        input_bound: ``R``, the largest ``|pixel|`` possible after public pre-processing (1 for
            images in [0, 1]); a scalar, or one value per input channel.
        J, L, max_order: as :func:`scattering2d`.

    Returns:
        float64 ``[C·K]`` in the channel order of :func:`scatter_images` (``C`` = number of values
        of ``input_bound``, 1 for a scalar).

    Raises:
        ValueError: ``input_bound`` not positive and finite; as :func:`scattering2d`.

    Taught in notebooks/07_features.ipynb.
    """
    J, L, max_order = _check_J_L(J, L, max_order)
    radius = np.atleast_1d(np.asarray(input_bound, np.float64))
    if radius.ndim != 1 or not np.all(np.isfinite(radius)) or not np.all(radius > 0):
        raise ValueError(f"input_bound must be a positive finite number or one per channel, got {input_bound!r}")
    bank = filter_bank(padded_shape(shape, J), J, L)
    phi = [_spatial_l1_norm(level) for level in bank["phi"]["levels"]]  # φ at each resolution
    psi = bank["psi"]
    first = [_spatial_l1_norm(p["levels"][0]) for p in psi]
    bounds = [phi[0]] + [first[n1] * phi[p1["j"]] for n1, p1 in enumerate(psi)]
    if max_order == 2:  # kymatio's order: (j1, θ1), then (j2 > j1, θ2)
        bounds += [first[n1] * _spatial_l1_norm(p2["levels"][p1["j"]]) * phi[p2["j"]]
                   for n1, p1 in enumerate(psi) for p2 in psi if p2["j"] > p1["j"]]
    return np.concatenate([r * np.asarray(bounds) for r in radius])


def channel_moments(features, chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per example, each channel's spatial mean and spatial mean square: ``([N, K], [N, K])``, float64.

    The per-example statistics whose averages over the data set are the channel means and
    second moments of Tramèr & Boneh's data normalisation (``scatter_normalization`` in their
    code). Computed in chunks of ``chunk_size`` examples (memory only).

    Args:
        features: ``[N, h, w, K]`` (NHWC, as :func:`scatter_images` returns; a memory map works).
    """
    if np.ndim(features) != 4:
        raise ValueError(f"features must have shape [N, h, w, K], got {np.shape(features)}")
    n, k = features.shape[0], features.shape[-1]
    means, squares = np.empty((n, k)), np.empty((n, k))
    for start in range(0, n, chunk_size):
        block = np.asarray(features[start:start + chunk_size], np.float64)
        means[start:start + len(block)] = block.mean(axis=(1, 2))
        squares[start:start + len(block)] = np.square(block).mean(axis=(1, 2))
    return means, squares


def private_quantile(values, quantile: float, lower: float, upper: float, noise_multiplier: float,
                     rng: np.random.Generator, rounds: int = 14) -> float:
    """A differentially private quantile of non-negative values, by noisy geometric bisection.

    Each round asks one counting query, ``#{i : vᵢ ≤ r}`` plus ``N(0, σ²)`` at the geometric
    midpoint ``r`` of ``[lower, upper]``, and keeps the half where the quantile lies (noisy count
    ``≥ quantile·n``: the lower half). After ``rounds`` rounds the bracket has shrunk to a ratio
    ``(upper/lower)^(1/2^rounds)``; its geometric midpoint is returned. A standard search; the
    noise only moves which quantile is found, by about ``σ/n``.

    Formal guarantees:
        ``rounds`` adaptively composed Gaussian mechanisms with noise multiplier
        ``noise_multiplier`` (a count has sensitivity 1 under add/remove-one neighbours, ``n``
        public): ``SelfComposedDpEvent(GaussianDpEvent(σ), rounds)``, provided ``lower`` and
        ``upper`` do not depend on the data and ``rng`` is secret. The answer is always in
        ``[lower, upper]`` (a quantile outside is reported at the nearer end).

    Args:
        values: ``[n]`` non-negative (e.g. per-example norms).
        quantile: in (0, 1); 0.5 for the median.
        lower, upper: ``0 < lower < upper``, data-independent.
        noise_multiplier: σ > 0 of each count.
        rng: a secretly seeded NumPy generator.
        rounds: number of counting queries, >= 1.

    Raises:
        ValueError: an argument out of range.
    """
    sigma = check_noise_multiplier(noise_multiplier)
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
    if not (0 < lower < upper and math.isfinite(upper)):
        raise ValueError(f"need 0 < lower < upper < inf, got lower={lower!r}, upper={upper!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    values = np.sort(np.asarray(values, np.float64).ravel())
    lo, hi = math.log(lower), math.log(upper)
    for _ in range(rounds):
        mid = (lo + hi) / 2
        count = np.searchsorted(values, math.exp(mid), side="right") + rng.normal(0.0, sigma)
        lo, hi = (lo, mid) if count >= quantile * len(values) else (mid, hi)
    return math.exp((lo + hi) / 2)


# The search range of the clipping radii, as a fraction of the proven largest norm (channel_bounds).
_SEARCH_LOWER_FRACTION = 1e-6


def private_channel_moments(features, bounds, noise_multiplier: float, rng: np.random.Generator, *,
                            count_noise_multiplier: float = 200.0, search_rounds: int = 14,
                            quantile: float = 0.5, chunk_size: int = 4096) -> dict:
    """Per-channel mean and variance of the features by Gaussian mechanisms, clipping radii included.

    Tramèr & Boneh 2021, §3 "data normalization" (``scatter_normalization`` in their code): the
    data set's channel means ``μ = (1/n) Σᵢ mᵢ`` and second moments ``ν = (1/n) Σᵢ sᵢ`` (``mᵢ``,
    ``sᵢ``: example i's spatial mean and mean square of each channel, :func:`channel_moments`)
    are released with Gaussian noise after clipping each ``mᵢ`` (and ``sᵢ``) to l2 norm ``r``,
    then ``var = max(ν − μ², 0)``. Their code sets ``r`` to the median of the norms over the
    private data and leaves that release out of its accounting ("technically a small privacy
    leak"). Here each radius is that median found privately (:func:`private_quantile`, counts
    with noise multiplier ``count_noise_multiplier``, searched between data-independent limits:
    ``‖B‖₂`` resp. ``‖B²‖₂``, the largest norm any example can have by :func:`channel_bounds`,
    and 1e-6 of it), and accounted (:func:`normalization_dp_event`).

    Formal guarantees:
        ``2·search_rounds`` Gaussian counting queries (σ = ``count_noise_multiplier``) and two
        Gaussian sums (σ = ``noise_multiplier``, sensitivity ``r`` each after clipping), adaptively
        composed, on the full data set (no subsampling): exactly
        :func:`normalization_dp_event`, under add/remove-one neighbours with ``n`` public (as
        DP-SGD's ``/ qN``), if ``rng`` is secret. The bounds only set the search range, so the
        guarantee holds for any ``bounds``; wrong ones cost accuracy, not privacy. Everything
        returned is covered (the statistics, the radii, the noise scales); anything computed
        from it, such as :func:`standardize` d features, is post-processing.

    Args:
        features: ``[n, h, w, K]`` the private features (NHWC; a memory map works).
        bounds: ``[K]`` data-independent bounds ``B_k > 0`` on ``|feature|`` (:func:`channel_bounds`).
        noise_multiplier: ``σ_norm > 0`` of the two sums (Tramèr & Boneh use 8).
        rng: a NumPy generator seeded secretly (its state is the noise).
        count_noise_multiplier: σ of each counting query of the radius searches.
        search_rounds: counting queries per radius.
        quantile: which quantile of the norms is the clipping radius (0.5: Tramèr & Boneh's median).
        chunk_size: examples per host chunk (memory only).

    Returns:
        ``{"mean": [K], "var": [K], "second_moment": [K], "clip_mean": r_m,
        "clip_second_moment": r_s, "noise_std_mean": σ r_m / n, "noise_std_second_moment":
        σ r_s / n}``, float64.

    Raises:
        ValueError: shapes that do not match, non-positive bounds, a bad σ or search setting.

    Taught in notebooks/07_features.ipynb.
    """
    sigma = check_noise_multiplier(noise_multiplier)
    bounds = np.asarray(bounds, np.float64)
    if np.ndim(features) != 4 or bounds.shape != (np.shape(features)[-1],):
        raise ValueError(f"features [n, h, w, K] and bounds [K] must agree, got {np.shape(features)} "
                         f"and {bounds.shape}")
    if not np.all(np.isfinite(bounds)) or not np.all(bounds > 0):
        raise ValueError("bounds must be positive and finite")
    n = np.shape(features)[0]
    stats = {}
    for name, per_example, upper in zip(("mean", "second_moment"), channel_moments(features, chunk_size),
                                        (np.linalg.norm(bounds), np.linalg.norm(bounds ** 2))):
        norms = np.linalg.norm(per_example, axis=1)
        radius = private_quantile(norms, quantile, upper * _SEARCH_LOWER_FRACTION, upper, count_noise_multiplier,
                                  rng, search_rounds)
        clipped = per_example * np.minimum(1.0, radius / np.maximum(norms, 1e-300))[:, None]
        stats[name] = (clipped.sum(axis=0) + rng.normal(0.0, sigma * radius, size=bounds.shape)) / n
        stats["clip_" + name] = radius
        stats["noise_std_" + name] = sigma * radius / n
    stats["var"] = np.maximum(stats["second_moment"] - stats["mean"] ** 2, 0.0)
    return stats


def normalization_dp_event(noise_multiplier: float, count_noise_multiplier: float = 200.0,
                           search_rounds: int = 14) -> dp_accounting.DpEvent:
    """The DpEvent of :func:`private_channel_moments` with these settings.

    ``ComposedDpEvent([SelfComposed(Gaussian(σ_count), 2·rounds), SelfComposed(Gaussian(σ_norm), 2)])``.
    Compose it with DP-SGD's event and calibrate DP-SGD's σ on the composition, as Tramèr &
    Boneh do for their two releases (``rdp = 2 · get_renyi_divergence(1, bn_noise_multiplier)``
    added to DP-SGD's RDP; their radius search is our addition).
    """
    sigma = check_noise_multiplier(noise_multiplier)
    count_sigma = check_noise_multiplier(count_noise_multiplier)
    if isinstance(search_rounds, bool) or not isinstance(search_rounds, (int, np.integer)) or search_rounds < 1:
        raise ValueError(f"search_rounds must be an integer >= 1, got {search_rounds!r}")
    return dp_accounting.ComposedDpEvent([
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(count_sigma), 2 * int(search_rounds)),
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), 2),
    ])


def standardize(features, mean, var, eps: float = 1e-5, chunk_size: int = 4096) -> np.ndarray:
    """``(x − μ_k) / √(var_k + eps)`` per channel; channels with ``var_k = 0`` become 0.

    Tramèr & Boneh's ``standardize`` (their ``eps = 1e-5``, and "if variance is too low, just
    ignore": a channel whose noisy variance was clamped to 0 is dropped). Post-processing of the
    (private) statistics: no further privacy cost. Chunked (a memory map works); returns a new
    float32 array.

    Args:
        features: ``[N, ..., K]`` (channels last).
        mean, var: ``[K]``.
    """
    mean, var = np.asarray(mean, np.float32), np.asarray(var, np.float32)
    if mean.shape != (np.shape(features)[-1],) or var.shape != mean.shape:
        raise ValueError(f"mean and var must have shape [K] = [{np.shape(features)[-1]}], "
                         f"got {mean.shape}, {var.shape}")
    scale = np.where(var > 0, 1.0 / np.sqrt(var + np.float32(eps)), 0.0).astype(np.float32)
    out = np.empty(np.shape(features), np.float32)
    for start in range(0, len(out), chunk_size):
        out[start:start + chunk_size] = (np.asarray(features[start:start + chunk_size], np.float32) - mean) * scale
    return out


def group_normalize(features, groups: int, eps: float = 1e-5, chunk_size: int = 4096) -> np.ndarray:
    """Per-example group normalisation of channels-last features, without scale and offset.

    Tramèr & Boneh's ``nn.GroupNorm(groups, K, affine=False)`` (their other option, used for
    Fashion-MNIST with 27 groups): the K channels are split into ``groups`` consecutive groups;
    each example's group is normalised with ITS OWN mean and variance over the group's channels
    and all positions.

    Formal guarantees:
        Each example's output depends only on that example: no privacy cost, nothing to account.

    Args:
        features: ``[N, h, w, K]`` (a memory map works).
        groups: a divisor of K.

    Raises:
        ValueError: ``groups`` does not divide K, or ``features`` is not 4-dimensional.
    """
    if np.ndim(features) != 4:
        raise ValueError(f"features must have shape [N, h, w, K], got {np.shape(features)}")
    k = np.shape(features)[-1]
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1 or k % groups:
        raise ValueError(f"groups must be a positive divisor of the {k} channels, got {groups!r}")
    out = np.empty(np.shape(features), np.float32)
    for start in range(0, len(out), chunk_size):
        block = np.asarray(features[start:start + chunk_size], np.float32)
        shaped = block.reshape(*block.shape[:-1], groups, k // groups)
        mean = shaped.mean(axis=(1, 2, 4), keepdims=True)
        var = shaped.var(axis=(1, 2, 4), keepdims=True)
        out[start:start + len(block)] = ((shaped - mean) / np.sqrt(var + np.float32(eps))).reshape(block.shape)
    return out
