"""Reconstruction attacks by an informed adversary, and what differential privacy promises against them.

Balle, Cherubin & Hayes 2022, "Reconstructing Training Data with Informed Adversaries" (IEEE S&P
2022): the adversary knows the training algorithm, the released parameters ``θ`` and every
training example but one, ``D⁻ = D \\ {z*}``, and outputs a guess of the missing example ``z*``.

* Convex models, exact: a regularised generalised linear model trained to its optimum has a zero
  gradient there, so the adversary subtracts the gradients it can compute (the known examples' and
  the regulariser's) and reads ``z*`` off what is left (:func:`glm_reconstruct`).
* Neural networks, learned: the adversary trains many *shadow* models on ``D⁻ ∪ {z}`` for
  candidates ``z`` of its own, with the same algorithm (:func:`train_models`, vectorised over
  models with ``jax.vmap``), and fits a *reconstructor* network mapping released parameters to the
  missing image (:func:`train_reconstructor`).
* Differential privacy bounds any such attack. With the missing example drawn uniformly from a
  prior set of ``m`` candidates known to the adversary, an (ε, δ)-DP training algorithm lets no
  adversary name it with probability above ``e^ε/m + δ`` (:func:`dp_success_bound`); for the
  full-batch Gaussian mechanism the exact trade-off curve gives the tighter
  :func:`gaussian_success_bound` (the approach of Hayes, Mahloujifar & Balle 2023, "Bounding
  Training Data Reconstruction in DP-SGD", and Kaissis et al. 2023).

DP training reuses :mod:`dpedu.dpsgd` (per-example clipping, noise once per step, division by the
public expected batch size); nothing here clips or adds noise by itself.

Taught in notebooks/05_reconstruction_attack.ipynb.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize
from jax.flatten_util import ravel_pytree

from dpedu import dpsgd
from dpedu._validation import check_delta, check_noise_multiplier, check_non_negative, check_positive, check_steps
from dpedu.mechanisms import gaussian_tradeoff_curve

__all__ = [
    "softmax_regression_loss",
    "train_softmax_regression",
    "glm_reconstruct",
    "SmallMLP",
    "cross_entropy_loss",
    "train_models",
    "Reconstructor",
    "TrainedReconstructor",
    "train_reconstructor",
    "nearest_candidate",
    "dp_success_bound",
    "gaussian_success_bound",
]

PyTree = Any

# Newton steps after the trust-region solver (each squares the gradient norm, roughly).
_NEWTON_POLISH_STEPS = 5


# ---------------------------------------------------------------------------------------------
# Convex case: multinomial logistic (softmax) regression with L2 regularisation
# ---------------------------------------------------------------------------------------------


def softmax_regression_loss(params: dict, image, label) -> jax.Array:
    """Cross-entropy of ONE example under softmax regression: ``logsumexp(Wx + b) − (Wx + b)_y``.

    ``params = {"weights": W [num_classes, num_features], "bias": b [num_classes]}``; ``image`` is
    flattened to ``x``. Its gradient is ``(p − e_y) xᵀ`` for ``W`` and ``p − e_y`` for ``b``
    (``p = softmax(Wx + b)``): row ``c`` of the weight gradient is entry ``c`` of the bias gradient
    times ``x`` — the fact :func:`glm_reconstruct` exploits (Balle, Cherubin & Hayes 2022, attack on GLMs).

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """
    logits = params["weights"] @ jnp.ravel(image) + params["bias"]
    return jax.nn.logsumexp(logits) - logits[label]


def _objective(params, images, labels, l2_regularization):
    """``Σᵢ ℓ(θ; zᵢ) + (λ/2)‖θ‖²``: the training objective (sum over examples, all of θ penalised)."""
    losses = jax.vmap(softmax_regression_loss, in_axes=(None, 0, 0))(params, images, labels)
    return jnp.sum(losses) + 0.5 * l2_regularization * sum(jnp.sum(leaf ** 2) for leaf in jax.tree_util.tree_leaves(params))


@jax.jit
def _known_gradient(params, images, labels, l2_regularization):
    """Gradient of everything the adversary knows: the known examples' losses and the regulariser."""
    return jax.grad(_objective)(params, images, labels, l2_regularization)


def _unflatten(flat, num_classes):
    num_features = flat.shape[0] // num_classes - 1
    split = num_classes * num_features
    return {"weights": flat[:split].reshape(num_classes, num_features), "bias": flat[split:]}


# Module-level and jitted on shapes, so repeated fits of one size compile once (SciPy works on flat
# vectors).
@functools.partial(jax.jit, static_argnames="num_classes")
def _flat_value_and_grad(flat, images, labels, l2_regularization, num_classes):
    value, grad = jax.value_and_grad(_objective)(_unflatten(flat, num_classes), images, labels, l2_regularization)
    return value, jnp.concatenate([grad["weights"].ravel(), grad["bias"]])


@functools.partial(jax.jit, static_argnames="num_classes")
def _flat_hessian_vector_product(flat, vector, images, labels, l2_regularization, num_classes):
    def gradient(f):
        return _flat_value_and_grad(f, images, labels, l2_regularization, num_classes)[1]
    return jax.jvp(gradient, (flat,), (vector,))[1]


@functools.partial(jax.jit, static_argnames="num_classes")
def _newton_step(flat, grad, images, labels, l2_regularization, num_classes):
    """Solves ``H d = −g`` by conjugate gradients on Hessian-vector products (H is positive definite)."""
    def hessian_times(vector):
        return _flat_hessian_vector_product(flat, vector, images, labels, l2_regularization, num_classes)
    return jax.scipy.sparse.linalg.cg(hessian_times, -grad, tol=1e-14, maxiter=500)[0]


def train_softmax_regression(images, labels, l2_regularization: float, num_classes: int = 10,
                             gradient_tolerance: float = 1e-10) -> tuple[dict, float]:
    """Minimises ``Σᵢ ℓ(θ; xᵢ, yᵢ) + (λ/2)(‖W‖² + ‖b‖²)`` exactly, in float64.

    The objective is λ-strongly convex, so it has one minimiser; Newton's method with a trust
    region and conjugate-gradient steps (``scipy.optimize.minimize(method="trust-ncg")`` on JAX
    gradients and Hessian-vector products, computed with 64-bit floats inside a scoped
    ``jax.enable_x64``) reaches it to a gradient norm around ``1e-10`` in a few dozen steps.

    Args:
        images: ``[n, ...]`` training inputs (flattened per example), values in [0, 1].
        labels: ``[n]`` integer classes in ``[0, num_classes)``.
        l2_regularization: ``λ > 0``.
        num_classes: number of classes ``C``.
        gradient_tolerance: stop once the gradient norm is below this (> 0).

    Returns:
        ``(params, gradient_norm)``: float64 NumPy arrays ``{"weights": [C, d], "bias": [C]}`` and
        the l2 norm of the objective's gradient there.

    Raises:
        ValueError: ``l2_regularization`` or ``gradient_tolerance`` not > 0; labels out of range;
            ``images`` and ``labels`` of different lengths.

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """
    l2_regularization = check_positive("l2_regularization", l2_regularization)
    gradient_tolerance = check_positive("gradient_tolerance", gradient_tolerance)
    images, labels = _check_examples(images, labels, num_classes)
    num_features = images.shape[1]
    with jax.enable_x64(True):
        fixed = (jnp.asarray(images, jnp.float64), jnp.asarray(labels), l2_regularization, num_classes)

        def fun(flat):
            value, grad = _flat_value_and_grad(jnp.asarray(flat), *fixed)
            return float(value), np.asarray(grad)

        def hessp(flat, vector):
            return np.asarray(_flat_hessian_vector_product(jnp.asarray(flat), jnp.asarray(vector), *fixed))

        result = scipy.optimize.minimize(fun, np.zeros(num_classes * (num_features + 1)), jac=True,
                                         method="trust-ncg", hessp=hessp,
                                         options={"gtol": gradient_tolerance, "maxiter": 200})
        flat = jnp.asarray(result.x)
        grad = _flat_value_and_grad(flat, *fixed)[1]
        # The trust region stops once predicted decreases of the objective reach its rounding
        # (around a gradient norm of 1e-8); plain Newton steps, which look at the gradient only,
        # keep converging quadratically from there.
        for _ in range(_NEWTON_POLISH_STEPS):
            if float(jnp.linalg.norm(grad)) <= gradient_tolerance:
                break
            flat = flat + _newton_step(flat, grad, *fixed)
            grad = _flat_value_and_grad(flat, *fixed)[1]
        gradient_norm = float(jnp.linalg.norm(grad))
        params = jax.tree_util.tree_map(np.asarray, _unflatten(flat, num_classes))
    return params, gradient_norm


def glm_reconstruct(params: dict, known_images, known_labels, l2_regularization: float) -> tuple[np.ndarray, int]:
    """The informed adversary's closed-form attack on softmax regression (Balle, Cherubin & Hayes 2022).

    At the optimum ``θ`` of ``Σᵢ ℓ(θ; zᵢ) + (λ/2)‖θ‖²`` the gradient is zero, so the missing
    example's gradient is the negative of everything else:
    ``∇ℓ(θ; z*) = −(λθ + Σ_{z ∈ D⁻} ∇ℓ(θ; z))``, computed here with ``jax.grad`` in float64. For
    softmax regression that gradient is ``((p − e_y) x*ᵀ, p − e_y)``: every row ``c`` of its weight
    part is ``(p_c − [c = y]) x*`` and entry ``c`` of its bias part is ``p_c − [c = y]``. Hence

    * the label is the one class whose bias residual is negative (``p_y − 1 < 0 < p_c``);
    * the image is the least-squares solution of ``r_W[c] = r_b[c] x`` over all rows,
      ``x* = Σ_c r_b[c] r_W[c] / Σ_c r_b[c]²`` (with one row it is ``r_W[c] / r_b[c]``; using all
      rows averages out rounding).

    Formal guarantees:
        Exact (up to float64 rounding and the optimiser's residual gradient ``g``, which adds an
        error of about ``‖g‖ / ‖r_b‖``) when ``params`` is the exact minimiser of the objective on
        ``D⁻ ∪ {z*}`` with the same ``λ``; no privacy-relevant guarantee — it is the attack that
        output perturbation or DP training must defeat.

    Edge cases:

        ==========================================  =====================================
        input                                       output
        ==========================================  =====================================
        ``params`` not the optimum (early stop)     biased image: the residual is not z*'s
        ``known_images`` empty (n = 1)              still exact: the residual is λθ alone
        all bias residuals ≥ 0 (not an optimum)     label = smallest residual entry
        ==========================================  =====================================

    Args:
        params: ``{"weights": [C, d], "bias": [C]}``, the released minimiser.
        known_images: ``[n − 1, ...]`` the examples of ``D⁻`` (flattened per example).
        known_labels: ``[n − 1]`` their labels.
        l2_regularization: the ``λ`` used in training (> 0).

    Returns:
        ``(image, label)``: the reconstructed flattened image (float64 ``[d]``) and class.

    Raises:
        ValueError: ``l2_regularization`` not > 0, shapes that do not match ``params``.

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """
    l2_regularization = check_positive("l2_regularization", l2_regularization)
    num_classes, num_features = np.shape(params["weights"])
    known_images, known_labels = _check_examples(known_images, known_labels, num_classes,
                                                 num_features=num_features, allow_empty=True)
    with jax.enable_x64(True):
        params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        known = _known_gradient(params64, jnp.asarray(known_images, jnp.float64), jnp.asarray(known_labels),
                                l2_regularization)
        residual_weights = -np.asarray(known["weights"])
        residual_bias = -np.asarray(known["bias"])
    image = residual_bias @ residual_weights / (residual_bias @ residual_bias)
    return image, int(np.argmin(residual_bias))


def _check_examples(images, labels, num_classes, num_features=None, allow_empty=False):
    images = np.asarray(images, dtype=np.float64)
    labels = np.asarray(labels)
    if images.ndim == 0 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"images must be [n, ...] and labels [n]; got shapes {images.shape} and {labels.shape}")
    if not allow_empty and len(labels) == 0:
        raise ValueError("images must hold at least one example")
    if num_features is not None and images.size != len(labels) * num_features:
        raise ValueError(f"images must have {num_features} features each (as params), got shape {images.shape}")
    images = images.reshape(len(labels), num_features if num_features is not None else -1)
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be integers in [0, {num_classes}), got values {np.unique(labels)[:10]}")
    return images, labels.astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Neural networks: shadow models and a learned reconstructor
# ---------------------------------------------------------------------------------------------


class SmallMLP(nn.Module):
    """The released model of the learned attack: flatten, one ReLU hidden layer, logits.

    With 16 hidden units on MNIST it has 12,730 parameters — small enough to train thousands of
    shadow copies on two CPU cores (the course-scale stand-in for the paper's MNIST MLP).

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """

    hidden_units: int = 16
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.hidden_units)(x)))


def cross_entropy_loss(module: nn.Module) -> Callable[..., jax.Array]:
    """The one-example cross-entropy ``loss_fn(params, image, label)`` of a Flax classifier.

    The shape :mod:`dpedu.dpsgd` expects: ONE example, its batch axis added for the module.

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """

    def loss_fn(params, image, label):
        logits = module.apply(params, image[None])[0]
        return jax.nn.logsumexp(logits) - logits[label]

    return loss_fn


def train_models(loss_fn: Callable[..., jax.Array], init_params: PyTree, known_inputs, known_labels,
                 target_inputs, target_labels, keys, *, steps: int, learning_rate: float,
                 l2_clip_norm: float | None = None, noise_multiplier: float | None = None,
                 models_per_batch: int = 64) -> jax.Array:
    """Trains one model per target example ``zⱼ`` on ``D⁻ ∪ {zⱼ}``, vectorised over models.

    Full-batch gradient descent (SGD with ``learning_rate``) for ``steps`` steps from the fixed
    ``init_params`` (the informed adversary of Balle, Cherubin & Hayes 2022 knows the
    initialisation), in one of three modes:

    * ``l2_clip_norm=None``: non-private, :func:`dpedu.dpsgd.make_nonprivate_step` (mean gradient);
    * ``l2_clip_norm=C, noise_multiplier=σ > 0``: DP, :func:`dpedu.dpsgd.make_dp_step` with
      sampling rate ``q = 1`` (every example in every step): per-example clipping to ``C``,
      ``N(0, σ²C²)`` added once, division by the public constant ``n = |D⁻| + 1``; each model draws
      its own noise from its key;
    * ``l2_clip_norm=C, noise_multiplier=0``: the same clipped step WITHOUT noise
      (:func:`dpedu.dpsgd.clipped_grad_sum` divided by ``n``) — not private; it is the
      adversary's simulation of the DP algorithm's noiseless trajectory.

    The models are trained ``models_per_batch`` at a time with ``jax.lax.map`` (``jax.vmap``
    inside each batch): one compiled program, no Python loop over models.

    Formal guarantees:
        With ``noise_multiplier`` σ > 0, each returned model is the output of ``steps`` adaptive
        compositions of the Gaussian mechanism with noise multiplier σ on its own data set (add or
        remove one example): account it with ``dpedu.accounting.epsilon(σ, 1.0, steps, δ)``; it is
        exactly ``√steps / σ``-GDP (Dong, Roth & Su 2022, Cor. 3.3). Otherwise none.

    Args:
        loss_fn: one-example loss ``loss_fn(params, input, label)`` (e.g. :func:`cross_entropy_loss`).
        init_params: the shared initial parameters.
        known_inputs, known_labels: ``D⁻``, ``[n − 1, ...]`` and ``[n − 1]``.
        target_inputs, target_labels: one example per model, ``[K, ...]`` and ``[K]``.
        keys: ``[K]`` PRNG keys, one per model (its DP noise; unused without noise).
        steps: full-batch steps ``T ≥ 1``.
        learning_rate: SGD learning rate (> 0).
        l2_clip_norm: ``C > 0``, or ``None`` for non-private training.
        noise_multiplier: ``σ ≥ 0`` (required with ``l2_clip_norm``).
        models_per_batch: models trained at once (memory: per-example gradients of
            ``models_per_batch · n`` examples).

    Returns:
        ``[K, P]`` float32: each model's parameters flattened with ``jax.flatten_util.ravel_pytree``.

    Raises:
        ValueError: an argument outside its range, or only one of ``l2_clip_norm`` and
            ``noise_multiplier`` given.

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """
    steps = check_steps(steps)
    optimizer = optax.sgd(check_positive("learning_rate", learning_rate))
    models_per_batch = check_steps(models_per_batch, "models_per_batch")
    known_inputs, known_labels = jnp.asarray(known_inputs), jnp.asarray(known_labels)
    num_examples = len(known_labels) + 1
    if (l2_clip_norm is None) != (noise_multiplier is None):
        raise ValueError("give both l2_clip_norm (> 0) and noise_multiplier (>= 0) for clipped training, "
                         f"or neither for non-private training; got {l2_clip_norm!r} and {noise_multiplier!r}")
    if l2_clip_norm is None:
        step = dpsgd.make_nonprivate_step(loss_fn, optimizer)
    elif check_non_negative("noise_multiplier", noise_multiplier) > 0:
        step = dpsgd.make_dp_step(loss_fn, optimizer, l2_clip_norm=l2_clip_norm, noise_multiplier=noise_multiplier,
                                  expected_batch_size=num_examples)
    else:
        l2_clip_norm = check_positive("l2_clip_norm", l2_clip_norm)

        def clipped_sum(params, inputs, labels, mask):
            return dpsgd.clipped_grad_sum(loss_fn, params, inputs, labels, mask, l2_clip_norm)

        def noiseless_mean(key, grad_sum, sums):
            del key  # the adversary's simulation: no noise
            return jax.tree_util.tree_map(lambda leaf: leaf / num_examples, grad_sum), sums

        step = dpsgd.TrainStep(clipped_sum, noiseless_mean, optimizer)
    mask = jnp.ones(num_examples, dtype=bool)

    def train_one(target):
        target_input, target_label, key = target
        inputs = jnp.concatenate([known_inputs, target_input[None]])
        labels = jnp.concatenate([known_labels, target_label[None]])

        def one_step(state, step_key):
            params, opt_state = state
            params, opt_state, _ = step.fused(params, opt_state, step_key, inputs, labels, mask)
            return (params, opt_state), None

        (params, _), _ = jax.lax.scan(one_step, (init_params, optimizer.init(init_params)),
                                      jax.random.split(key, steps))
        return ravel_pytree(params)[0]

    @jax.jit
    def train_all(inputs, labels, model_keys):
        return jax.lax.map(train_one, (inputs, labels, model_keys), batch_size=models_per_batch)

    return train_all(jnp.asarray(target_inputs), jnp.asarray(target_labels), keys)


class Reconstructor(nn.Module):
    """Released parameters (standardised, flattened) -> image in [0, 1]: one ReLU hidden layer.

    A small version of the reconstructor network of Balle, Cherubin & Hayes 2022, which also
    maps the released model's flattened weights to the missing training image.

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """

    hidden_units: int = 512
    output_shape: tuple[int, ...] = (28, 28, 1)

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        hidden = nn.relu(nn.Dense(self.hidden_units)(features))
        pixels = nn.sigmoid(nn.Dense(math.prod(self.output_shape))(hidden))
        return pixels.reshape((features.shape[0], *self.output_shape))


@dataclasses.dataclass(frozen=True)
class TrainedReconstructor:
    """A fitted :class:`Reconstructor` and the standardisation of its input; call it on ``[B, P]``
    flattened released parameters to get ``[B, *output_shape]`` images.

    Attributes:
        module: the :class:`Reconstructor`.
        params: its trained parameters.
        feature_mean, feature_scale: per-coordinate mean and standard deviation of the shadow
            models' parameters (the adversary's own statistics), used to standardise inputs.
    """

    module: Reconstructor
    params: PyTree
    feature_mean: jax.Array
    feature_scale: jax.Array

    def __call__(self, released_params) -> jax.Array:
        features = (jnp.asarray(released_params) - self.feature_mean) / self.feature_scale
        return self.module.apply(self.params, features)


def train_reconstructor(shadow_params, shadow_images, key: jax.Array, *, hidden_units: int = 512,
                        epochs: int = 30, batch_size: int = 64, learning_rate: float = 1e-3) -> TrainedReconstructor:
    """Fits a :class:`Reconstructor` on (shadow model, its missing image) pairs by mean squared error.

    Balle, Cherubin & Hayes 2022 (learned attack): the adversary's training set is ``{(θ_k, z_k)}`` with
    ``θ_k`` a shadow model trained on ``D⁻ ∪ {z_k}``. Inputs are standardised per coordinate with
    the shadow set's own mean and standard deviation; Adam on mini-batches, every epoch a fresh
    permutation; the whole loop is one ``jax.lax.scan`` (no host round trip per step).

    Args:
        shadow_params: ``[K, P]`` flattened shadow-model parameters (from :func:`train_models`).
        shadow_images: ``[K, *image_shape]`` the candidate each shadow model was trained with.
        key: PRNG key (initialisation and shuffling).
        hidden_units: width of the hidden layer (≥ 1).
        epochs: passes over the shadow set (≥ 1).
        batch_size: examples per Adam step, in ``[1, K]``.
        learning_rate: Adam step size (> 0).

    Returns:
        A :class:`TrainedReconstructor`.

    Raises:
        ValueError: an argument outside its range, or mismatched lengths.

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """
    shadow_params = jnp.asarray(shadow_params, jnp.float32)
    shadow_images = jnp.asarray(shadow_images, jnp.float32)
    if shadow_params.ndim != 2 or len(shadow_params) != len(shadow_images):
        raise ValueError(f"shadow_params must be [K, P] and shadow_images [K, ...]; got {shadow_params.shape} "
                         f"and {shadow_images.shape}")
    num_models = len(shadow_params)
    epochs = check_steps(epochs, "epochs")
    batch_size = check_steps(batch_size, "batch_size")
    if batch_size > num_models:
        raise ValueError(f"batch_size must be in [1, K={num_models}], got {batch_size}")
    module = Reconstructor(check_steps(hidden_units, "hidden_units"), tuple(shadow_images.shape[1:]))
    optimizer = optax.adam(check_positive("learning_rate", learning_rate))
    mean = jnp.mean(shadow_params, axis=0)
    # A coordinate that never varies carries no information; scale 1 keeps it finite.
    scale = jnp.std(shadow_params, axis=0)
    scale = jnp.where(scale > 0, scale, 1.0)
    features = (shadow_params - mean) / scale
    init_key, shuffle_key = jax.random.split(key)
    params = module.init(init_key, features[:1])
    batches_per_epoch = num_models // batch_size

    def loss(p, x, y):
        return jnp.mean((module.apply(p, x) - y) ** 2)

    def adam_step(state, batch):
        p, opt_state = state
        grads = jax.grad(loss)(p, features[batch], shadow_images[batch])
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), None

    def epoch(state, epoch_key):
        order = jax.random.permutation(epoch_key, num_models)[: batches_per_epoch * batch_size]
        return jax.lax.scan(adam_step, state, order.reshape(batches_per_epoch, batch_size))[0], None

    @jax.jit
    def fit(p):
        state = (p, optimizer.init(p))
        return jax.lax.scan(epoch, state, jax.random.split(shuffle_key, epochs))[0][0]

    return TrainedReconstructor(module, fit(params), mean, scale)


def nearest_candidate(points, candidates) -> np.ndarray:
    """Index of the candidate nearest (squared l2 distance) to each point.

    Both success tests of this module. The missing image ``z*`` was drawn from a prior set of
    ``m`` candidates; the learned attack succeeds when its reconstruction is nearer ``z*`` than any
    other candidate image (points: reconstructions, candidates: images), and the prior-aware attack
    guesses the candidate whose simulated model is nearest the released one (points: released
    parameters, candidates: the models simulated for each candidate). Chance level: ``1/m``. Ties
    go to the lower index.

    Args:
        points: ``[E, ...]`` one point per trial.
        candidates: ``[E, m, ...]`` each trial's candidates, shaped like the points.

    Returns:
        ``[E]`` integer indices into each trial's candidates.

    Raises:
        ValueError: shapes that do not match.

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """
    points = np.asarray(points, dtype=np.float64)
    candidates = np.asarray(candidates, dtype=np.float64)
    if candidates.ndim < 2 or candidates.shape[0] != points.shape[0] or candidates.shape[2:] != points.shape[1:]:
        raise ValueError(f"candidates must be [E, m, ...] matching points [E, ...]; got "
                         f"{candidates.shape} and {points.shape}")
    trials, size = candidates.shape[:2]
    distances = np.sum((candidates.reshape(trials, size, -1) - points.reshape(trials, 1, -1)) ** 2, axis=2)
    return np.argmin(distances, axis=1)


# ---------------------------------------------------------------------------------------------
# What differential privacy guarantees
# ---------------------------------------------------------------------------------------------


def dp_success_bound(epsilon: float, delta: float, prior_size: int) -> float:
    """Largest probability that any attack on an (ε, δ)-DP release names the missing example.

    Setting: ``z*`` is drawn uniformly from a prior set ``{z_1, ..., z_m}`` that the adversary
    knows, the release is ``M(D⁻ ∪ {z*})``, and any guess ``g(θ) ∈ {1, ..., m}`` is made. DP
    (add/remove one example) compares each ``M(D⁻ ∪ {z_j})`` with the same ``M(D⁻)``:
    ``P[g = j | z* = z_j] ≤ e^ε P[g(M(D⁻)) = j] + δ``; averaging over ``j`` and using
    ``Σ_j P[g(M(D⁻)) = j] = 1`` gives ``P[success] ≤ e^ε/m + δ``, capped at 1. (The reconstruction
    robustness of Balle, Cherubin & Hayes 2022 for this prior; Hayes, Mahloujifar & Balle
    2023 give tighter, mechanism-specific bounds, see :func:`gaussian_success_bound`.)

    Formal guarantees:
        A valid upper bound for every adversary and every prior set of size ``m`` when the
        training algorithm is (ε, δ)-DP for adding or removing one example.

    Edge cases:

        ===================  ========================================
        input                output
        ===================  ========================================
        ``epsilon == inf``   1 (no protection)
        ``e^ε/m + δ >= 1``   1 (the bound says nothing)
        ``prior_size == 1``  1 (nothing to guess)
        ===================  ========================================

    Args:
        epsilon: ε > 0 (``math.inf`` allowed).
        delta: δ in (0, 1).
        prior_size: ``m ≥ 1`` candidates.

    Returns:
        The bound, in ``[1/m, 1]``.

    Raises:
        ValueError: an argument outside its range.

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """
    epsilon = check_positive("epsilon", epsilon, allow_inf=True)
    delta = check_delta(delta)
    prior_size = check_steps(prior_size, "prior_size")
    if epsilon >= math.log(prior_size):  # e^ε/m ≥ 1 already (and no overflow for huge ε)
        return 1.0
    return min(1.0, math.exp(epsilon) / prior_size + delta)


def gaussian_success_bound(noise_multiplier: float, steps: int, prior_size: int) -> float:
    """Tight success bound for full-batch DP gradient descent: ``Φ(√T/σ − Φ⁻¹(1 − 1/m))``.

    Full-batch DP-SGD (sampling rate 1) composes ``T`` Gaussian mechanisms of noise multiplier σ:
    exactly ``μ``-GDP with ``μ = √T/σ`` (Dong, Roth & Su 2022, Cor. 3.3), whose trade-off curve is
    ``G_μ(α) = Φ(Φ⁻¹(1 − α) − μ)`` (:func:`dpedu.mechanisms.gaussian_tradeoff_curve`). Comparing
    each ``M(D⁻ ∪ {z_j})`` with ``M(D⁻)`` as in :func:`dp_success_bound`, the guess ``j`` is a test
    with type-I error ``α_j = P[g(M(D⁻)) = j]`` and power at most ``1 − G_μ(α_j)``; as ``Σ α_j = 1``
    and ``G_μ`` is convex, the success probability is at most ``1 − G_μ(1/m)`` (Jensen). This is
    the blow-up-function bound of Hayes, Mahloujifar & Balle 2023 and Kaissis et al. 2023, in the
    case without subsampling where it has this closed form.

    Formal guarantees:
        Valid for every adversary against the mechanism of :func:`train_models` with this σ,
        ``T`` steps and sampling rate 1 (and tight for the worst-case pair of gradients).

    Edge cases: large ``√T/σ`` gives values near 1; ``prior_size == 1`` gives 1.

    Args:
        noise_multiplier: σ > 0.
        steps: ``T ≥ 1``.
        prior_size: ``m ≥ 1``.

    Returns:
        The bound, in ``[1/m, 1]``.

    Raises:
        ValueError: an argument outside its range.

    Taught in notebooks/05_reconstruction_attack.ipynb.
    """
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    steps = check_steps(steps)
    prior_size = check_steps(prior_size, "prior_size")
    # T-fold composition of μ=1/σ Gaussians is the Gaussian with μ = √T/σ, i.e. σ_eff = σ/√T.
    return float(1.0 - gaussian_tradeoff_curve(1.0 / prior_size, noise_multiplier / math.sqrt(steps)))
