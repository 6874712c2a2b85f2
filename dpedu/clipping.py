"""Per-example gradient clipping: the step that bounds one example's influence (its sensitivity).

Abadi et al. 2016, "Deep Learning with Differential Privacy", Algorithm 1 ("Clip gradient"):
``ḡ = g · min(1, C / ‖g‖₂)``, with ``‖g‖₂`` the l2 norm of the WHOLE gradient (all layers
flattened into one vector; the paper's per-layer variant is not used here). Once every example's
gradient has norm at most ``C``, adding or removing one example changes the SUM of clipped
gradients by at most ``C`` in l2: that is the sensitivity the Gaussian noise of
:mod:`dpedu.noise` is calibrated to.

Three ways to get that sum (:data:`CLIPPING_METHODS`), equal in exact arithmetic:

* ``"per_example"`` (:func:`clipped_grad`): every example's gradient by ``jax.vmap(jax.grad)``,
  clipped, then summed — the textbook algorithm; it materialises ``B`` gradients.
* ``"two_pass"`` (:func:`two_pass_clipped_grad_sum`): pass 1 computes only each example's
  gradient NORM; pass 2 is ONE ordinary batched backward pass of ``Σᵢ wᵢ · lossᵢ`` with the
  constants ``wᵢ = min(1, C / ‖gᵢ‖)``, whose gradient is ``Σᵢ wᵢ gᵢ``, the clipped sum (the idea
  behind Lee & Kifer 2021, "Scaling up Differentially Private Deep Learning with Fast
  Per-Example Gradient Clipping", and the "ghost clipping" of Li et al. 2022). Much faster for
  dense layers on CPU, where XLA handles ``vmap`` of the weight gradient (an outer product per
  example) badly.
* ``"ghost"`` (:meth:`dpedu.ghost.GhostLoss.clipped_grad_sum`, for Flax models made of Dense and
  Conv layers only): ONE backward pass to every layer's output; each example's norm and the
  clipped sum then follow from the layers' inputs and output gradients (Li et al. 2022's ghost
  norm, Bu et al. 2023's book-keeping). It lives in :mod:`dpedu.ghost` because it needs the
  model's layers, which a one-example ``loss_fn`` hides; this module stays free of Flax.

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from dpedu._validation import check_non_negative

PyTree = Any
CLIPPING_METHODS = ("per_example", "two_pass", "ghost")


def _check_l2_clip_norm(l2_clip_norm):
    # JAX arrays (possibly traced inside jit) cannot be checked here; anything else is.
    if isinstance(l2_clip_norm, jax.Array):
        return l2_clip_norm
    return check_non_negative("l2_clip_norm", l2_clip_norm, allow_inf=True)


def clip_to_norm(tree: PyTree, l2_clip_norm) -> tuple[PyTree, jax.Array]:
    """Scales ``tree`` so that its global l2 norm is at most ``l2_clip_norm``.

    Abadi et al. 2016, Algorithm 1: ``ḡ = g · min(1, C / ‖g‖₂)``, the norm taken over all leaves
    of the pytree together (one flat vector).

    Formal guarantees:
        The returned tree always has global l2 norm ``<= l2_clip_norm`` (up to float rounding,
        a relative ``~1e-7`` in float32), whatever ``tree`` holds, NaN and inf included. A
        gradient that is not finite (a NaN or inf entry, or a squared norm that overflows the
        dtype, i.e. ``‖g‖ > ~1.8e19`` in float32) is replaced by zeros: that example then
        contributes nothing, which keeps the sensitivity bound instead of spreading NaN into the
        noisy sum. The returned norm is the true one (NaN or inf), so a trainer can see it.

    Edge cases:

        ============================  =========================================
        input                          output
        ============================  =========================================
        ``‖g‖ <= C``                   ``g`` unchanged (factor exactly 1)
        ``‖g‖ > C``                    ``g · C / ‖g‖`` (norm ``C``)
        ``g == 0``                     zeros, no NaN (no division by 0)
        ``C == 0``                     zeros
        ``C == inf``                   ``g`` unchanged when finite
        NaN / inf in ``g``             zeros; norm returned as NaN / inf
        ============================  =========================================

    Args:
        tree: a pytree of float arrays (one example's gradient).
        l2_clip_norm: ``C`` in ``[0, inf]``.

    Returns:
        ``(clipped_tree, norm)``: the clipped tree (same structure and dtypes) and the global l2
        norm of ``tree`` BEFORE clipping (a scalar array).

    Raises:
        ValueError: ``l2_clip_norm`` is a number outside ``[0, inf]``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    l2_clip_norm = _check_l2_clip_norm(l2_clip_norm)
    norm = optax.global_norm(tree)
    # jnp.where picks 1 when ‖g‖ <= C, so C / ‖g‖ is only used where ‖g‖ > C >= 0: never 0/0.
    factor = jnp.where(norm > l2_clip_norm, l2_clip_norm / norm, 1.0)
    finite = jnp.isfinite(norm)
    clipped = jax.tree_util.tree_map(
        lambda leaf: jnp.where(finite, leaf * factor.astype(leaf.dtype), jnp.zeros_like(leaf)), tree
    )
    return clipped, norm


def mean_over_copies(loss_fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """The loss of one example given as K augmented copies: the mean of ``loss_fn`` over axis 0.

    De et al. 2022, §3.1 ("augmentation multiplicity"): the gradient of one example is the MEAN
    of its K copies' gradients. The gradient of the mean loss is that mean (linearity), computed
    in one batched backward pass; clipping comes after, so K copies still count as ONE example.

    Args:
        loss_fn: ``loss_fn(params, example_inputs, example_label) -> scalar`` for one copy.

    Returns:
        ``fn(params, copies, example_label) -> scalar`` where ``copies`` is ``[K, ...]``.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """

    def example_loss(params, copies, example_label):
        return jnp.mean(jax.vmap(loss_fn, in_axes=(None, 0, None))(params, copies, example_label))

    return example_loss


@dataclasses.dataclass(frozen=True)
class ClippedGrad:
    """Per-example clipped gradients of a one-example loss; built by :func:`clipped_grad`.

    Calling it with ``(params, inputs, labels, mask)`` for a batch of ``B`` examples returns
    ``(clipped_grads, norms)``: ``clipped_grads`` has the structure of ``params`` with a leading
    axis ``B`` (example ``i``'s clipped gradient, zeros where ``mask[i]`` is False) and ``norms``
    (shape ``[B]``) holds each example's gradient norm before clipping.

    Attributes:
        loss_fn: ``loss_fn(params, example_inputs, example_label) -> scalar`` for ONE example.
        l2_clip_norm: the clipping norm ``C``.
        augmult: inputs carry a copy axis: ``inputs[i]`` is ``[K, ...]``, K augmented copies of
            example ``i``; its gradient is the MEAN of the K copies' gradients, taken BEFORE
            clipping (De et al. 2022, §3.1, "augmentation multiplicity"), so K copies still count
            as one example.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """

    loss_fn: Callable[..., jax.Array]
    l2_clip_norm: float
    augmult: bool = False

    @property
    def l2_sensitivity(self) -> float:
        """l2 sensitivity of the SUM over a batch of the returned gradients: ``C``.

        For the add/remove-one-example relation, the one Poisson-sampled DP-SGD is accounted with
        (:func:`dpedu.accounting.dp_event`); replacing one example instead changes the sum by up
        to ``2C``.
        """
        return self.l2_clip_norm

    def __call__(self, params: PyTree, inputs, labels, mask) -> tuple[PyTree, jax.Array]:
        example_loss = mean_over_copies(self.loss_fn) if self.augmult else self.loss_fn

        def one_example(example_inputs, example_label, keep):
            grad = jax.grad(example_loss)(params, example_inputs, example_label)
            clipped, norm = clip_to_norm(grad, self.l2_clip_norm)
            # Padding is zeroed here, inside the clip, so no caller can forget it; `where`
            # (not a product) keeps a padded slot's NaN from leaking in.
            clipped = jax.tree_util.tree_map(lambda leaf: jnp.where(keep, leaf, jnp.zeros_like(leaf)), clipped)
            return clipped, norm

        return jax.vmap(one_example)(inputs, labels, jnp.asarray(mask, dtype=bool))


def clipped_grad(loss_fn: Callable[..., jax.Array], l2_clip_norm, *, augmult: bool = False) -> ClippedGrad:
    """Turns a one-example loss into a function giving per-example clipped gradients.

    The ``jax.grad``-shaped transform at the heart of DP-SGD (Abadi et al. 2016, Algorithm 1,
    "Compute gradient" and "Clip gradient"): ``jax.vmap`` of ``jax.grad`` over the batch, then
    :func:`clip_to_norm` per example. With ``augmult=True`` each example's gradient is first
    averaged over its K augmented copies (De et al. 2022, §3.1), then clipped.

    Formal guarantees:
        For any ``params`` and batch, every returned per-example gradient has l2 norm
        ``<= l2_clip_norm``, and examples with ``mask`` False contribute exactly zero. Hence the
        sum over the batch has l2 sensitivity ``l2_clip_norm`` (``.l2_sensitivity``) under adding
        or removing one example — independently of how the batch was padded. This holds only if
        ``loss_fn`` looks at ONE example: a model that mixes examples (batch normalisation) breaks
        it.

    Edge cases: as :func:`clip_to_norm` for each example; masked examples give zeros even when
    their gradient is NaN; an all-False ``mask`` gives all zeros.

    Args:
        loss_fn: ``loss_fn(params, example_inputs, example_label) -> scalar`` for ONE example
            (e.g. ``lambda p, x, y: cross_entropy(model.apply(p, x[None])[0], y)``).
        l2_clip_norm: ``C`` in ``[0, inf]`` (a Python number, or an array inside ``jit``).
        augmult: ``inputs`` has shape ``[B, K, ...]`` (K augmented copies per example, from
            :func:`dpedu.augment.augmult`); default ``[B, ...]``.

    Returns:
        A :class:`ClippedGrad`: ``fn(params, inputs, labels, mask) -> (clipped_grads, norms)``
        with a leading batch axis on every leaf, and ``fn.l2_sensitivity == l2_clip_norm``.

    Raises:
        ValueError: ``l2_clip_norm`` outside ``[0, inf]``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    return ClippedGrad(loss_fn, _check_l2_clip_norm(l2_clip_norm), bool(augmult))


def check_clipping_method(clipping_method: str) -> str:
    """Returns ``clipping_method`` if it is in :data:`CLIPPING_METHODS`; ValueError otherwise."""
    if clipping_method not in CLIPPING_METHODS:
        raise ValueError(f"clipping_method must be one of {', '.join(map(repr, CLIPPING_METHODS))}; "
                         f"got {clipping_method!r}")
    return clipping_method


def check_chunk_size(chunk_size, name: str = "chunk_size"):
    """Returns ``chunk_size`` if it is None or an integer >= 1; ValueError otherwise."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{name} must be None or an integer >= 1, got {chunk_size!r}")
    return chunk_size


def per_example_grad_norms(loss_fn: Callable[..., jax.Array], params: PyTree, inputs, labels, *,
                           augmult: bool = False, chunk_size: int | None = None) -> jax.Array:
    """Pass 1 of two-pass clipping: each example's gradient norm ``‖gᵢ‖₂`` (over all leaves).

    ``jax.vmap`` of ``jax.grad`` reduced to one l2 norm per example inside the same compiled
    function, so only norms leave it. With ``chunk_size`` the batch is processed ``chunk_size``
    examples at a time (``jax.lax.map`` over chunks, ``vmap`` within one): XLA then keeps at most
    ``chunk_size`` gradients alive at once. On CPU that is several times faster for dense layers
    (the per-example weight gradients of a chunk stay in cache; XLA writes the whole batch's out
    to memory otherwise). The batch is zero-padded to a multiple of ``chunk_size``; the padding's
    norms are dropped.

    Formal guarantees:
        None by itself: the norms are exact functions of each example (NOT private). They only
        set the clipping factors of :func:`clip_factors`; releasing them is not covered by ε.

    Args:
        loss_fn: ``loss_fn(params, example_inputs, example_label) -> scalar`` for ONE example.
        params: parameter pytree.
        inputs: ``[B, ...]`` (``[B, K, ...]`` with ``augmult``).
        labels: ``[B]``.
        augmult: each example's loss is the mean over its K copies (De et al. 2022, §3.1).
        chunk_size: examples per ``vmap``; None: the whole batch at once.

    Returns:
        ``[B]`` norms (NaN or inf for a non-finite gradient, as :func:`clip_to_norm` reports).

    Raises:
        ValueError: ``chunk_size`` not None or an integer >= 1.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    chunk_size = check_chunk_size(chunk_size)
    example_loss = mean_over_copies(loss_fn) if augmult else loss_fn

    def norms(chunk_inputs, chunk_labels):
        grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(params, chunk_inputs, chunk_labels)
        return jax.vmap(optax.global_norm)(grads)

    batch = jnp.shape(labels)[0]
    if chunk_size is None or chunk_size >= batch:
        return norms(inputs, labels)
    chunks = -(-batch // chunk_size)

    def padded(a):
        a = jnp.asarray(a)
        a = jnp.concatenate([a, jnp.zeros((chunks * chunk_size - batch, *a.shape[1:]), a.dtype)])
        return a.reshape(chunks, chunk_size, *a.shape[1:])

    return jax.lax.map(lambda c: norms(*c), (padded(inputs), padded(labels))).reshape(-1)[:batch]


def clip_factors(norms: jax.Array, mask, l2_clip_norm) -> jax.Array:
    """Each example's clipping factor ``wᵢ = maskᵢ · min(1, C / ‖gᵢ‖)``, 0 for a non-finite norm.

    Abadi et al. 2016, Algorithm 1: ``ḡᵢ = wᵢ gᵢ``; the same factor (and the same NaN rule) as
    :func:`clip_to_norm`, given the norms.

    Formal guarantees:
        ``0 <= wᵢ <= 1`` and ``wᵢ · ‖gᵢ‖ <= C`` (up to float rounding) for every example, whatever
        ``norms`` holds: so ``wᵢ gᵢ`` is a clipped gradient, and an example with ``maskᵢ`` False or
        a non-finite norm gets exactly 0.

    Edge cases:

        ============================  ====================
        input                          ``wᵢ``
        ============================  ====================
        ``‖gᵢ‖ <= C``                  1
        ``‖gᵢ‖ > C``                   ``C / ‖gᵢ‖``
        ``‖gᵢ‖ == 0``                  1 (no division by 0)
        ``C == 0``, ``‖gᵢ‖ > 0``       0
        ``C == inf``, ``‖gᵢ‖`` finite  1
        ``‖gᵢ‖`` NaN / inf              0
        ``maskᵢ`` False                0
        ============================  ====================

    Args:
        norms: ``[B]`` gradient norms (:func:`per_example_grad_norms`).
        mask: bool ``[B]``; False marks padding.
        l2_clip_norm: ``C`` in ``[0, inf]``.

    Returns:
        ``[B]`` factors in ``[0, 1]``.

    Raises:
        ValueError: ``l2_clip_norm`` is a number outside ``[0, inf]``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    l2_clip_norm = _check_l2_clip_norm(l2_clip_norm)
    factor = jnp.where(norms > l2_clip_norm, l2_clip_norm / norms, 1.0)
    return jnp.where(jnp.asarray(mask, dtype=bool) & jnp.isfinite(norms), factor, 0.0).astype(norms.dtype)


def two_pass_clipped_grad_sum(loss_fn: Callable[..., jax.Array], params: PyTree, inputs, labels, mask,
                              l2_clip_norm, *, augmult: bool = False,
                              chunk_size: int | None = None) -> tuple[PyTree, jax.Array]:
    """The sum of per-example clipped gradients without materialising them: two passes.

    Abadi et al. 2016, Algorithm 1 ("Clip gradient", summed), computed as Lee & Kifer 2021
    propose: pass 1 (:func:`per_example_grad_norms`) gives ``‖gᵢ‖``, hence the factors
    ``wᵢ`` of :func:`clip_factors`; pass 2 back-propagates ``Σᵢ stop_gradient(wᵢ) · lossᵢ``
    through the whole batch at once, an ordinary batched backward pass. By linearity of the
    gradient its result is ``Σᵢ wᵢ gᵢ = Σᵢ clip(gᵢ)``, the clipped sum :func:`clipped_grad`
    gives, at the cost of about two backward passes.

    Examples with ``wᵢ = 0`` (padding, non-finite gradient, ``C = 0``) are left out of pass 2
    altogether: their slot is filled with a copy of a kept example (weight 0), because a
    weight-0 term can still turn the batched sum into NaN (``0 · inf``) — and whether the output
    is NaN must not depend on one example. With no kept example the sum is exactly zero.

    Formal guarantees:
        In exact arithmetic the result equals ``Σᵢ maskᵢ · clip(gᵢ, C)`` of :func:`clipped_grad`
        (tested against a one-example loop to 1e-5), so it has l2 sensitivity ``C`` under adding
        or removing one example, for any padding; an example with a non-finite gradient or
        ``maskᵢ`` False contributes nothing. In float32 each example's contribution has norm
        ``<= C`` up to rounding (pass 2 recomputes ``gᵢ`` in a different order: relative
        ``~1e-6``). Like :func:`clipped_grad` it assumes ``loss_fn`` sees ONE example.

    Edge cases: as :func:`clip_factors` per example; all-False ``mask`` or ``C == 0`` give zeros.

    Args:
        loss_fn: ``loss_fn(params, example_inputs, example_label) -> scalar`` for ONE example.
        params: parameter pytree.
        inputs: ``[B, ...]`` (``[B, K, ...]`` with ``augmult``).
        labels: ``[B]``.
        mask: bool ``[B]``; False marks padding.
        l2_clip_norm: ``C`` in ``[0, inf]``.
        augmult: each example's gradient is the mean over its K copies before clipping (De et
            al. 2022, §3.1), in both passes.
        chunk_size: pass 1's examples per ``vmap`` (:func:`per_example_grad_norms`).

    Returns:
        ``(grad_sum, norms)``: the clipped sum (structure of ``params``) and the ``[B]``
        pre-clipping norms.

    Raises:
        ValueError: ``l2_clip_norm`` outside ``[0, inf]`` or a bad ``chunk_size``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    l2_clip_norm = _check_l2_clip_norm(l2_clip_norm)
    example_loss = mean_over_copies(loss_fn) if augmult else loss_fn
    norms = per_example_grad_norms(loss_fn, params, inputs, labels, augmult=augmult, chunk_size=chunk_size)
    weights = jax.lax.stop_gradient(clip_factors(norms, mask, l2_clip_norm))
    kept = weights > 0
    first_kept = jnp.argmax(kept)

    def keep_or_first(a):
        a = jnp.asarray(a)
        return jnp.where(kept.reshape(-1, *([1] * (a.ndim - 1))), a, a[first_kept])

    inputs, labels = keep_or_first(inputs), keep_or_first(labels)

    def weighted_loss(p):
        return jnp.sum(weights * jax.vmap(example_loss, in_axes=(None, 0, 0))(p, inputs, labels))

    grad_sum = jax.grad(weighted_loss)(params)
    any_kept = jnp.any(kept)
    grad_sum = jax.tree_util.tree_map(lambda leaf: jnp.where(any_kept, leaf, jnp.zeros_like(leaf)), grad_sum)
    return grad_sum, norms
