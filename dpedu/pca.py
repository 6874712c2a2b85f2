"""Differentially private PCA, as Abadi et al. 2016 (§4, "Differentially private PCA") use it.

Abadi et al. feed their MNIST network a 60-dimensional projection of the image. The projection
itself is learned from the private training images, so it must be private too and its cost counts
in the final ε: they normalise each image to unit ℓ2 norm, form ``C = Aᵀ A`` (one row of ``A`` per
image), add Gaussian noise to every entry of ``C``, and keep the top eigenvectors of the noisy
matrix. Their released code (TensorFlow ``models/research/differential_privacy/dp_sgd``,
``dp_pca.py``) uses noise standard deviation ``σ_p · 1`` per entry and symmetrises the result.

Sensitivity (add/remove-one adjacency, the one DP-SGD with Poisson sampling is accounted under):
``C = Σ_i x̂_i x̂_iᵀ`` with ``x̂_i = x_i / ‖x_i‖`` (and ``x̂_i = 0`` if ``x_i = 0``). Adding or
removing example ``x`` changes ``C`` by ``± x̂ x̂ᵀ``, whose Frobenius norm is
``‖x̂ x̂ᵀ‖_F = ‖x̂‖² ≤ 1``. Seen as a vector of ``d²`` entries, ``C`` has ℓ2 sensitivity 1, so
adding i.i.d. ``N(0, σ_p²)`` to every entry is the Gaussian mechanism with noise multiplier
``σ_p`` (a ``dp_accounting.GaussianDpEvent(σ_p)``). Symmetrising ``(M + Mᵀ)/2``, the eigen-
decomposition and projecting the data are post-processing. (Under replace-one adjacency the
sensitivity would be ``‖x̂x̂ᵀ − ŷŷᵀ‖_F ≤ √2``.)

The PCA runs once on the whole training set (sampling rate 1), before DP-SGD; the trainer
composes the two mechanisms with :func:`composed_dp_event` and reports ε of the composition.

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

import dp_accounting
import numpy as np

from dpedu._validation import check_noise_multiplier, check_steps


def normalize_rows(data: np.ndarray) -> np.ndarray:
    """Each row (flattened example) scaled to unit ℓ2 norm; all-zero rows stay zero.

    Abadi et al. 2016 §4: this bounds every example's contribution ``x̂ x̂ᵀ`` to Frobenius norm 1.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    flat = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.divide(flat, norms, out=np.zeros_like(flat), where=norms > 0)


def noisy_covariance(data: np.ndarray, noise_multiplier: float, rng: np.random.Generator) -> np.ndarray:
    """``Aᵀ A`` of the row-normalised data plus Gaussian noise, symmetrised (Abadi et al. §4).

    Args:
        data: ``(n, ...)`` examples; each is flattened to ``d`` values.
        noise_multiplier: σ_p ≥ 0; every entry gets ``N(0, σ_p²)`` noise (sensitivity 1). 0 gives
            the exact, non-private matrix.
        rng: NumPy generator for the noise.

    Returns:
        ``(d, d)`` symmetric float64 matrix.

    Formal guarantees:
        For σ_p > 0 the output is ``GaussianDpEvent(σ_p)``-DP w.r.t. adding or removing one
        example (ℓ2 sensitivity ``‖x̂x̂ᵀ‖_F ≤ 1``, see the module docstring); its (ε, δ) comes from
        an accountant applied to :func:`pca_dp_event`.

        ============================  ======================================
        input                          result
        ============================  ======================================
        noise_multiplier = 0           exact ``Aᵀ A`` (NOT private)
        noise_multiplier < 0 / NaN     ``ValueError``
        an all-zero example            contributes nothing (no division by 0)
        ============================  ======================================

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    if noise_multiplier != 0:
        check_noise_multiplier(noise_multiplier)
    rows = normalize_rows(data)
    covariance = rows.T @ rows
    if noise_multiplier:
        noise = rng.normal(0.0, noise_multiplier, size=covariance.shape)
        covariance = covariance + noise
    # Symmetrising is post-processing; it also halves the variance of off-diagonal noise.
    return 0.5 * (covariance + covariance.T)


def dp_pca_projection(
    data: np.ndarray, projection_dims: int, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """The top ``projection_dims`` eigenvectors of :func:`noisy_covariance`, as columns.

    Abadi et al. 2016 §4 and §5.2 (60 dimensions; σ_p = 4, 7, 16 for their small, medium and
    large noise settings). Project with :func:`project`.

    Returns:
        ``(d, projection_dims)`` float32 matrix with orthonormal columns, by decreasing eigenvalue.

    Formal guarantees:
        Post-processing of :func:`noisy_covariance`: ``GaussianDpEvent(σ_p)`` (none if σ_p = 0).

        ===============================  ===========================
        input                             result
        ===============================  ===========================
        projection_dims ∉ [1, d]          ``ValueError``
        noise_multiplier = 0              exact (non-private) PCA
        ===============================  ===========================

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    dims = check_steps(projection_dims, "projection_dims")
    d = int(np.prod(np.shape(data)[1:]))
    if dims > d:
        raise ValueError(f"projection_dims must be in [1, {d}] (the input dimension), got {dims}")
    eigenvalues, eigenvectors = np.linalg.eigh(noisy_covariance(data, noise_multiplier, rng))
    top = np.argsort(eigenvalues)[::-1][:dims]
    return eigenvectors[:, top].astype(np.float32)


def project(data: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Flattens each example and multiplies by ``projection``: ``(n, ...) -> (n, k)`` float32.

    As in Abadi et al.'s code, the raw (not normalised) examples are projected.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    flat = np.asarray(data, dtype=np.float32).reshape(len(data), -1)
    return flat @ projection


def pca_dp_event(noise_multiplier: float) -> dp_accounting.DpEvent:
    """The DP event of :func:`dp_pca_projection`: one Gaussian mechanism, sensitivity 1.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    return dp_accounting.GaussianDpEvent(check_noise_multiplier(noise_multiplier))


def composed_dp_event(pca_noise_multiplier: float, training_event: dp_accounting.DpEvent) -> dp_accounting.DpEvent:
    """DP-PCA followed by training: ``ComposedDpEvent([GaussianDpEvent(σ_p), training_event])``.

    Abadi et al. 2016 §5.2 account both with the moments accountant; any dp_accounting
    accountant (RDP, PLD) composes them the same way.

    Formal guarantees:
        Sequential composition: the ε of this event at δ bounds the whole pipeline (projection
        learned from the data, then DP-SGD on the projected data), under add/remove adjacency.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    return dp_accounting.ComposedDpEvent([pca_dp_event(pca_noise_multiplier), training_event])
