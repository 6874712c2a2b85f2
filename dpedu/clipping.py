"""Per-example gradient clipping: the step that bounds one example's influence (its sensitivity).

Abadi et al. 2016, "Deep Learning with Differential Privacy", Algorithm 1 ("Clip gradient"):
``ḡ = g · min(1, C / ‖g‖₂)``, with ``‖g‖₂`` the l2 norm of the WHOLE gradient (all layers
flattened into one vector; the paper's per-layer variant is not used here). Once every example's
gradient has norm at most ``C``, adding or removing one example changes the SUM of clipped
gradients by at most ``C`` in l2: that is the sensitivity the Gaussian noise of
:mod:`dpedu.noise` is calibrated to.

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
