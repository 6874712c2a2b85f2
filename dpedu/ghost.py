"""Ghost clipping for Flax models: the clipped sum in ONE backward pass.

Every parameter of a ``flax.linen.Dense`` or ``flax.linen.Conv`` layer enters the loss through
``y = a W + b`` at each of the layer's ``P`` positions (``P = 1`` for a Dense layer on ``[B, d]``;
the output pixels for a convolution, with ``a`` the input patch there). Write ``a_{i,p}`` for
example ``i``'s layer input at position ``p`` and ``g_{i,p} = ∂lossᵢ/∂y_{i,p}`` for the loss
gradient at that layer's output. Then example ``i``'s gradient is

    ``∂lossᵢ/∂W = Σ_p a_{i,p} g_{i,p}ᵀ``,   ``∂lossᵢ/∂b = Σ_p g_{i,p}``,

so the pairs ``(aᵢ, gᵢ)`` determine everything clipping needs:

* the norm: ``‖∂lossᵢ/∂W‖²_F = Σ_{p,q} (a_{i,p}·a_{i,q}) (g_{i,p}·g_{i,q})`` — the "ghost norm"
  (Li, Tramèr, Liang & Hashimoto 2022, "Large Language Models Can Be Strong Differentially
  Private Learners", §4; for ``P = 1`` it is ``‖aᵢ‖² ‖gᵢ‖²``, Goodfellow 2015, "Efficient
  Per-Example Gradient Computations"), or the norm of the explicit ``Σ_p a_{i,p} g_{i,p}ᵀ``,
  whichever costs fewer operations for that layer (Bu, Mao & Xu 2022, "Scalable and Efficient
  Training of Large Convolutional Neural Networks with Differential Privacy": mixed ghost
  clipping);
* the clipped sum: ``Σᵢ wᵢ ∂lossᵢ/∂W = Σᵢ Σ_p (wᵢ a_{i,p}) g_{i,p}ᵀ``, ONE matrix product per
  layer over all examples and positions (or, where the norm already formed the per-example
  gradients and they take no more memory than the ``(aᵢ, gᵢ)``, their weighted sum), with the
  clip factors ``wᵢ`` of :func:`dpedu.clipping.clip_factors` — no second backward pass (Bu, Wang,
  Zha & Karypis 2023, "Differentially Private Optimization on Large Model at Small Cost":
  book-keeping).

The Wide-ResNets of :mod:`dpedu.models` (De et al. 2022) add two layers, also exact from ``(aᵢ, gᵢ)``:

* ``flax.linen.GroupNorm``: ``y = x̂ ⊙ γ + β`` per channel, ``x̂`` the input normalised with
  statistics of each example's own channel groups. So ``∂lossᵢ/∂γ = Σ_p g_{i,p} ⊙ x̂_{i,p}`` and
  ``∂lossᵢ/∂β = Σ_p g_{i,p}``: ``[B, C]``, formed explicitly (as Opacus's GroupNorm per-sample
  gradient does: Yousefpour et al. 2021, "Opacus: User-Friendly Differential Privacy Library in
  PyTorch"). ``x̂`` is recomputed from the captured layer input by the layer itself with scale
  and offset switched off (its own groups, epsilon and variance formula).
* :class:`dpedu.models.WSConv`: ``y = conv(a, Ŵ) + b`` with ``Ŵ = S(W, s)``
  (:func:`dpedu.models.standardize_weight`, kernel ``W``, gain ``s``). Example ``i``'s
  ``Ŵ``-gradient ``Ĝᵢ = Σ_p a_{i,p} g_{i,p}ᵀ`` is a convolution's, and
  ``(∂lossᵢ/∂W, ∂lossᵢ/∂s) = J_Sᵀ Ĝᵢ`` with ``J_S`` the Jacobian of ``S`` at the current
  ``(W, s)``: one linear map for all examples (it depends on the parameters, not the data). So
  the ``Ĝᵢ`` are formed explicitly and each is pulled through that vector-Jacobian product —
  per output channel ``∂lossᵢ/∂s = ⟨Ĝᵢ, ŵ⟩`` and ``∂lossᵢ/∂W = s·r·(Ĝᵢ - mean(Ĝᵢ) - ⟨Ĝᵢ, ŵ⟩ ŵ)``
  with ``ŵ = (W - mean W)·r``, ``r = 1/√(fan_in·var W)`` (no variance term where ``eps`` clamps
  it), ``O(B × kernel size)``, see :func:`_standardized_squares` — and the norm is taken over
  ``(W, s, b)``, the real parameters, never ``Ŵ`` (``‖Ĝᵢ‖`` is not the norm of any parameter's
  gradient). By linearity the clipped sum is ONE ``jax.vjp`` of ``S``, ``J_Sᵀ (Σᵢ wᵢ Ĝᵢ)``. No
  ghost norm here (it gives ``‖Ĝᵢ‖``, not ``‖J_Sᵀ Ĝᵢ‖``); with ``P ≥ 64`` output pixels in the
  WRNs on CIFAR-10 the explicit gradient is the cheaper one anyway.

The ``g_{i,p}`` of every layer come from one ordinary batched backward pass of ``Σᵢ lossᵢ``
taken with respect to zero-valued perturbations added to each layer's output (NOT with respect to
the parameters, so the batched weight gradients are never formed). The layers are found with
``flax.linen.intercept_methods``, without any change to the model's code.

This is exact, not an approximation: ``gᵢ`` is example ``i``'s own gradient provided the model
never mixes the examples of a batch (no batch normalisation; dpedu's models never do; a GroupNorm
with statistics over the example axis or across devices raises). Any parameter that is not one of
a captured layer — the kernel and bias of ``Dense`` / ``Conv``, the scale and bias of
``GroupNorm``, the kernel, gain and bias of ``WSConv``, each of exactly that class, not a subclass
(a ``LayerNorm``, a custom ``self.param``) — makes :class:`GhostLoss` raise ``ValueError``
naming it: a parameter is never silently left out.

Taught in notebooks/03_dpsgd_mnist.ipynb.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from flax.linen.linear import canonicalize_padding

from dpedu import clipping, models

PyTree = Any
_USE_PER_EXAMPLE = "use clipping_method='per_example' for this model"
# The layer classes whose parameters ghost clipping computes (exact types), by kind.
_DENSE, _CONV, _GROUP_NORM, _WS_CONV = "dense", "conv", "group_norm", "ws_conv"
_KINDS = {nn.Dense: _DENSE, nn.Conv: _CONV, nn.GroupNorm: _GROUP_NORM, models.WSConv: _WS_CONV}


def _broadcast(value, rank: int) -> tuple[int, ...]:
    # flax.linen.Conv's reading of strides / dilations: None -> 1, an int for every axis.
    if value is None:
        value = 1
    return (value,) * rank if isinstance(value, int) else tuple(value)


@dataclasses.dataclass(frozen=True)
class _Layer:
    """One captured layer call: where its parameters live and what the algebra needs.

    ``kind`` is one of ``"dense"``, ``"conv"``, ``"group_norm"``, ``"ws_conv"``.
    ``kernel_size``, ``strides`` and ``padding`` are set for the convolutions only (per spatial
    axis, ``padding`` either a lax padding string or ``(low, high)`` pairs). ``params`` names the
    parameters the layer owns; ``normalize`` (GroupNorm) maps the layer input to ``x̂`` and
    ``eps`` (WSConv) is the standardisation's.
    """

    kind: str
    path: tuple[str, ...]
    params: tuple[str, ...]
    input_shape: tuple[int, ...]
    output: jax.ShapeDtypeStruct
    kernel_size: tuple[int, ...] | None = None
    strides: tuple[int, ...] | None = None
    padding: Any = None
    normalize: Callable[[jax.Array], jax.Array] | None = None
    eps: float | None = None

    @property
    def name(self) -> str:
        return "/".join(self.path)


def _captured(context) -> bool:
    # Exact types: a subclass may change what __call__ computes, so its parameters stay
    # "not owned" and raise below rather than being handled by the wrong formula.
    return context.method_name == "__call__" and type(context.module) in _KINDS


def _layer_input(args, kwargs):
    if args:
        return args[0]
    return kwargs["inputs"] if "inputs" in kwargs else kwargs["x"]


def _describe_layer(module, input_shape, output, kwargs) -> _Layer:
    """The :class:`_Layer` of a captured call, or ValueError for an option the algebra lacks."""
    path = tuple(module.path)
    name = "/".join(path)
    kind = _KINDS[type(module)]

    def unsupported(what):
        return ValueError(f"ghost clipping does not support layer {name!r} ({type(module).__name__}): {what}; "
                          f"{_USE_PER_EXAMPLE}")

    if kind == _GROUP_NORM:
        if module.axis_name is not None:
            raise unsupported(f"axis_name={module.axis_name!r} (statistics across devices mix examples)")
        if kwargs.get("mask") is not None:
            raise unsupported("a mask")
        if len(input_shape) < 2:
            raise unsupported(f"an input of shape {input_shape} without a batch axis")
        ndim = len(input_shape)
        axes = range(1, ndim) if module.reduction_axes is None else module.reduction_axes
        axes = (axes,) if isinstance(axes, int) else axes
        if 0 in {axis % ndim for axis in axes}:
            raise unsupported(f"reduction_axes={module.reduction_axes!r} include the example axis (mixes examples)")
        params = (("scale",) if module.use_scale else ()) + (("bias",) if module.use_bias else ())
        # x̂ as the layer computes it, by the layer itself (same groups, epsilon, variance formula).
        normalizer = module.clone(parent=None, use_scale=False, use_bias=False)
        return _Layer(kind, path, params, tuple(input_shape), output,
                      normalize=lambda x: normalizer.apply({}, x))
    if kind == _WS_CONV:
        # WSConv: lax.conv_general_dilated, NHWC, "SAME", square stride, no dilation or groups.
        if len(input_shape) != 4:
            raise unsupported(f"an input of shape {input_shape}, not [batch, height, width, channels]")
        return _Layer(kind, path, ("kernel", "gain", "bias"), tuple(input_shape), output,
                      tuple(module.kernel_size), _broadcast(module.strides, 2), "SAME", eps=module.eps)
    params = ("kernel", "bias") if module.use_bias else ("kernel",)
    if module.promote_dtype is not promote_dtype:
        raise unsupported("a custom promote_dtype")
    if kind == _DENSE:
        if module.dot_general is not None or module.dot_general_cls is not None:
            raise unsupported("a custom dot_general")
        if len(input_shape) < 2:
            raise unsupported(f"an input of shape {input_shape} without a batch axis")
        return _Layer(kind, path, params, tuple(input_shape), output)
    kernel_size = (module.kernel_size,) if isinstance(module.kernel_size, int) else tuple(module.kernel_size)
    rank = len(kernel_size)
    if module.feature_group_count != 1:
        raise unsupported(f"feature_group_count={module.feature_group_count} (only 1)")
    if {*_broadcast(module.input_dilation, rank), *_broadcast(module.kernel_dilation, rank)} != {1}:
        raise unsupported("input or kernel dilation (only 1)")
    if module.mask is not None:
        raise unsupported("a kernel mask")
    if module.conv_general_dilated is not None or module.conv_general_dilated_cls is not None:
        raise unsupported("a custom conv_general_dilated")
    if len(input_shape) < rank + 2:
        raise unsupported(f"an input of shape {input_shape} without a batch axis")
    padding = canonicalize_padding(module.padding, rank)
    if isinstance(padding, str):
        if padding not in ("SAME", "SAME_LOWER", "VALID"):
            raise unsupported(f"padding {padding!r} (only 'SAME', 'SAME_LOWER', 'VALID' or (low, high) pairs)")
    else:
        padding = tuple((int(low), int(high)) for low, high in padding)
        if min(min(pair) for pair in padding) < 0:
            raise unsupported(f"negative padding {padding}")
    return _Layer(kind, path, params, tuple(input_shape), output, kernel_size, _broadcast(module.strides, rank),
                  padding)


def _space_to_depth_blocks(layer: _Layer) -> tuple[int, ...]:
    # Kernel offsets per axis once the input is cut into stride-sized blocks: ceil(k / s).
    return tuple(-(-k // s) for k, s in zip(layer.kernel_size, layer.strides))


def _conv_patches(x: jax.Array, layer: _Layer) -> jax.Array:
    """``[N, *spatial, C]`` -> ``[N, K', P]``: the input patch under each of the ``P`` output positions.

    Space-to-depth first (each ``s × s`` block of pixels becomes one pixel with ``s²C`` channels),
    so a stride-``s`` convolution with kernel ``k`` reads ``ceil(k/s)`` offsets per axis at stride
    1: a few large slices (4 x 4 = 16 for the MNIST CNN's 8x8 stride-2 kernel) instead of one
    small strided slice per kernel entry. Features come first and positions last, so each slice
    is one contiguous block of the result and the per-example gradient ``Aᵢ Gᵢ`` is a plain
    batched matrix product (XLA on CPU ran the per-entry slices, interleaved, at a fraction of
    memory speed). The ``K' = Π ceil(k/s)·s · C`` features are ordered (block offsets, channel,
    in-block offsets); :func:`_kernel_layout` maps a ``[K', F]`` gradient back to the HWIO
    kernel. Where ``s`` does not divide ``k`` the features beyond the kernel are multiplied by 0,
    so every formula downstream stays exact.
    """
    rank = len(layer.kernel_size)
    spatial, channels = x.shape[1:-1], x.shape[-1]
    if isinstance(layer.padding, str):
        pads = jax.lax.padtype_to_pads(spatial, layer.kernel_size, layer.strides, layer.padding)
    else:
        pads = layer.padding
    out = [(n + low + high - k) // s + 1
           for n, (low, high), k, s in zip(spatial, pads, layer.kernel_size, layer.strides)]
    blocks = _space_to_depth_blocks(layer)
    # The windows reach s·(out + blocks - 1) padded pixels; zero-pad up to that, drop what no window reads.
    lengths = [s * (o + b - 1) for s, o, b in zip(layer.strides, out, blocks)]
    x = jnp.pad(x, ((0, 0), *[(low, max(0, length - n - low)) for n, (low, _), length in zip(spatial, pads, lengths)],
                    (0, 0)))
    x = x[(slice(None), *[slice(0, length) for length in lengths])]
    x = x.reshape(x.shape[0], *[d for length, s in zip(lengths, layer.strides) for d in (length // s, s)], channels)
    x = x.transpose(0, 2 * rank + 1, *range(2, 2 * rank + 1, 2), *range(1, 2 * rank, 2))  # [N, C, *s, *blocks]
    views = [x[(..., *[slice(u, u + o) for u, o in zip(offsets, out)])]
             for offsets in itertools.product(*(range(b) for b in blocks))]
    patches = jnp.stack(views, axis=1)  # [N, Π blocks, C, *s, *out]
    patches = patches.reshape(x.shape[0], -1, int(np.prod(out)))
    if any(k % s for k, s in zip(layer.kernel_size, layer.strides)):
        index = np.indices((*blocks, *layer.strides))
        inside = np.all([index[i] * s + index[rank + i] < k
                         for i, (k, s) in enumerate(zip(layer.kernel_size, layer.strides))], axis=0)
        inside = np.broadcast_to(inside.reshape(*blocks, 1, *layer.strides), (*blocks, channels, *layer.strides))
        patches = patches * inside.reshape(-1, 1).astype(patches.dtype)
    return patches


def _kernel_layout(layer: _Layer, grad: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
    """A ``[K', F]`` kernel gradient in :func:`_conv_patches`' feature order, as the layer's kernel."""
    if layer.kernel_size is None:
        return grad
    rank = len(layer.kernel_size)
    blocks = _space_to_depth_blocks(layer)
    grad = grad.reshape(*blocks, kernel_shape[-2], *layer.strides, kernel_shape[-1])  # [*blocks, C, *s, F]
    grad = grad.transpose(*[j for i in range(rank) for j in (i, rank + 1 + i)], rank, 2 * rank + 1)
    grad = grad.reshape(*[b * s for b, s in zip(blocks, layer.strides)], *kernel_shape[-2:])
    return grad[tuple(slice(0, k) for k in layer.kernel_size)]


def _positions(layer: _Layer, layer_input: jax.Array, output_grad: jax.Array, batch: int):
    """``(A [B, K, P], G [B, P, F])``: each example's layer inputs (features by position) and
    output gradients (position by feature), so that its kernel gradient is the product ``Aᵢ Gᵢ``."""
    features = output_grad.shape[-1]
    if layer.kernel_size is None:  # Dense: every axis between the batch and the features is a position
        inputs = layer_input.reshape(batch, -1, layer_input.shape[-1]).transpose(0, 2, 1)
    else:  # Conv: extra batch axes of one example and its output pixels are positions
        rank = len(layer.kernel_size)
        patches = _conv_patches(layer_input.reshape(-1, *layer_input.shape[-rank - 1:]), layer)
        expected = int(np.prod(output_grad.shape[-rank - 1:-1]))
        if patches.shape[-1] != expected:
            raise ValueError(f"ghost clipping computed {patches.shape[-1]} output positions for layer "
                             f"{layer.name!r}, which has {expected}; {_USE_PER_EXAMPLE}")
        # [N, K', P] with N = batch x extra batch axes: those extra axes become positions.
        inputs = patches.reshape(batch, -1, *patches.shape[1:]).transpose(0, 2, 1, 3)
        inputs = inputs.reshape(batch, patches.shape[1], -1)
    return inputs, output_grad.reshape(batch, -1, features)


def _squares(x: jax.Array) -> jax.Array:
    """``[B, ...]`` -> ``[B]``: each example's squared l2 norm."""
    return jnp.sum(jnp.square(x).reshape(x.shape[0], -1), axis=1)


def _standardized_squares(kernel: jax.Array, gain: jax.Array, eps: float, hat_grads: jax.Array) -> jax.Array:
    """``‖∂lossᵢ/∂W‖² + ‖∂lossᵢ/∂s‖²`` for each example from its ``Ĝᵢ`` (``hat_grads``, ``[B, *kernel]``).

    The vector-Jacobian product of :func:`dpedu.models.standardize_weight` written out per output
    channel (what ``jax.vjp`` computes, tested against it): with ``u = W - mean(W)``, ``t = n·var(W)``
    over the ``n`` fan-in entries, ``r = 1/√max(t, eps)`` and ``ŵ = u·r``,

        ``∂lossᵢ/∂s = ⟨Ĝᵢ, ŵ⟩``,   ``∂lossᵢ/∂W = s·r·(Ĝᵢ - mean(Ĝᵢ) - c·⟨Ĝᵢ, ŵ⟩·ŵ)``,

    ``c`` the derivative of ``max(t, eps)`` in ``t`` as JAX takes it (1 above ``eps``, 0 below,
    1/2 at a tie). The residual is formed explicitly (no cancellation of squared norms): a few
    passes over ``[B, n, F]``, where XLA on CPU ran the batched ``jax.vjp`` and its squared norm
    ~10x slower.
    """
    batch, features = hat_grads.shape[0], kernel.shape[-1]
    fan_in = int(np.prod(kernel.shape[:-1]))
    axes = tuple(range(kernel.ndim - 1))
    mean = jnp.mean(kernel, axis=axes, keepdims=True)
    t = jnp.var(kernel, axis=axes, keepdims=True) * fan_in
    r = jax.lax.rsqrt(jnp.maximum(t, eps)).reshape(features)
    c = jnp.where(t > eps, 1.0, jnp.where(t == eps, 0.5, 0.0)).reshape(features)
    unit = ((kernel - mean) * r).reshape(fan_in, features)  # ŵ
    hat = hat_grads.reshape(batch, fan_in, features)
    gain_grads = jnp.sum(hat * unit, axis=1)  # [B, F]
    residual = hat - jnp.mean(hat, axis=1, keepdims=True) - (c * gain_grads)[:, None, :] * unit
    kernel_squares = jnp.sum(jnp.square(residual), axis=1) * jnp.square(gain * r)  # [B, F]
    return jnp.sum(kernel_squares + jnp.square(gain_grads), axis=1)


def _layer_grads(layer: _Layer, layer_input: jax.Array, output_grad: jax.Array, batch: int, leaves: dict):
    """``(squared norms [B], total)`` for one layer: each example's squared gradient norm over the
    layer's parameters, and ``total(weights, rows) -> {parameter key: Σᵢ wᵢ ∂lossᵢ/∂θ}`` (``rows``
    zeroes the dropped examples' rows). The formulas are the module docstring's."""

    def key(name):
        return ("params", *layer.path, name)

    if layer.kind == _GROUP_NORM:  # [B, C] per-example gradients, formed explicitly
        g = output_grad.reshape(batch, -1, output_grad.shape[-1])  # [B, P, C]
        grads = {}
        if "scale" in layer.params:
            grads["scale"] = jnp.sum(g * layer.normalize(layer_input).reshape(g.shape), axis=1)
        if "bias" in layer.params:
            grads["bias"] = jnp.sum(g, axis=1)
        squared = sum((_squares(grad) for grad in grads.values()), jnp.zeros(batch, g.dtype))
        return squared, lambda weights, rows: {key(name): weights @ rows(grad) for name, grad in grads.items()}

    a, g = _positions(layer, layer_input, output_grad, batch)
    bias_grad = jnp.sum(g, axis=1) if "bias" in layer.params else None  # [B, F]
    squared = _squares(bias_grad) if bias_grad is not None else jnp.zeros(batch, g.dtype)
    kernel_shape = jnp.shape(leaves[key("kernel")])

    def bias_total(weights, rows):
        return {} if bias_grad is None else {key("bias"): weights @ rows(bias_grad)}

    if layer.kind == _WS_CONV:
        # Ĝᵢ, example i's gradient w.r.t. the standardised kernel Ŵ = S(W, s), then J_Sᵀ Ĝᵢ per example.
        kernel, gain = leaves[key("kernel")], leaves[key("gain")]
        standardized, pullback = jax.vjp(lambda w, s: models.standardize_weight(w, s, layer.eps), kernel, gain)
        hat_grads = jax.vmap(lambda grad: _kernel_layout(layer, grad, kernel_shape))(a @ g)
        hat_grads = hat_grads.astype(standardized.dtype)  # [B, *kernel_shape]
        squared += _standardized_squares(kernel, gain, layer.eps, hat_grads)

        keep = _keep(a, g)

        def total(weights, rows):  # linearity: ONE pullback of Σᵢ wᵢ Ĝᵢ, the sum as _keep chooses
            if keep:
                hat_sum = jnp.tensordot(weights, rows(hat_grads), axes=1)
            else:
                hat_sum = _kernel_layout(layer, jnp.einsum("bkp,bpf->kf", rows(a) * weights[:, None, None], rows(g)),
                                         kernel_shape)
            kernel_sum, gain_sum = pullback(hat_sum.astype(standardized.dtype))
            return {key("kernel"): kernel_sum, key("gain"): gain_sum, **bias_total(weights, rows)}

        return squared, total

    if _explicit(a, g):
        kernel_grad = a @ g  # [B, K, F]
        squared += _squares(kernel_grad)
        keep = _keep(a, g)

        def kernel_total(weights, rows):  # as _keep chooses
            if keep:
                return jnp.tensordot(weights, rows(kernel_grad), axes=1)
            return jnp.einsum("bkp,bpf->kf", rows(a) * weights[:, None, None], rows(g))
    else:
        if a.shape[2] == 1:  # one position: ‖a gᵀ‖² = (‖a‖ ‖g‖)² (norms first: fewer overflows)
            squared += jnp.square(jnp.linalg.norm(a[:, :, 0], axis=-1) * jnp.linalg.norm(g[:, 0], axis=-1))
        else:
            squared += jnp.einsum("bpq,bpq->b", a.transpose(0, 2, 1) @ a, g @ g.transpose(0, 2, 1))

        def kernel_total(weights, rows):
            return jnp.einsum("bkp,bpf->kf", rows(a) * weights[:, None, None], rows(g))

    def total(weights, rows):
        return {key("kernel"): _kernel_layout(layer, kernel_total(weights, rows), kernel_shape),
                **bias_total(weights, rows)}

    return squared, total


@dataclasses.dataclass(frozen=True)
class GhostLoss:
    """A one-example loss of a Flax model that can also give the batch's clipped sum directly.

    Called as ``loss(params, example_inputs, example_label)`` it is the usual one-example loss
    ``example_loss(module.apply(params, example_inputs[None])[0], example_label)``, so every
    clipping method of :mod:`dpedu.clipping` accepts it. Its :meth:`clipped_grad_sum` is the ghost
    clipping method (``clipping_method="ghost"`` of :func:`dpedu.dpsgd.clipped_grad_sum`).

    Attributes:
        module: a Flax linen module mapping a batch ``[B, ...]`` to logits ``[B, ...]``, whose
            parameters all belong to ``nn.Dense``, ``nn.Conv``, ``nn.GroupNorm`` or
            :class:`dpedu.models.WSConv` layers, each called once (every model of
            :data:`dpedu.models.MODELS`).
        example_loss: ``example_loss(logits, label) -> scalar`` for ONE example's logits (e.g.
            ``optax.softmax_cross_entropy_with_integer_labels``).

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """

    module: nn.Module
    example_loss: Callable[..., jax.Array]

    def __call__(self, params: PyTree, example_inputs, example_label) -> jax.Array:
        return self.example_loss(self.module.apply(params, jnp.asarray(example_inputs)[None])[0], example_label)

    def _layers(self, params: PyTree, inputs: jax.ShapeDtypeStruct) -> tuple[_Layer, ...]:
        """The captured layers of one forward pass, checked (ValueError when unsupported)."""
        batch = inputs.shape[0]
        layers = []
        for size in (batch, batch + 1):  # two batch sizes tell the example axis from a fixed one
            def interceptor(next_fun, args, kwargs, context, size=size):
                output = next_fun(*args, **kwargs)
                if _captured(context):
                    shape = tuple(jnp.shape(_layer_input(args, kwargs)))
                    if not shape or shape[0] != size or output.shape[0] != size:
                        raise ValueError(f"ghost clipping needs the example axis first in every captured layer's "
                                         f"input and output; layer {'/'.join(context.module.path)!r} maps "
                                         f"{shape} to {output.shape} for a batch of {size}; {_USE_PER_EXAMPLE}")
                    if size == batch:
                        layers.append(_describe_layer(context.module, shape,
                                                      jax.ShapeDtypeStruct(output.shape, output.dtype), kwargs))
                return output

            with nn.intercept_methods(interceptor):
                jax.eval_shape(self.module.apply, params, jax.ShapeDtypeStruct((size, *inputs.shape[1:]), inputs.dtype))
        layers = tuple(layers)
        paths = [layer.path for layer in layers]
        for path in paths:
            if paths.count(path) > 1:
                raise ValueError(f"ghost clipping needs each layer called once per forward pass; "
                                 f"layer {'/'.join(path)!r} is called {paths.count(path)} times; {_USE_PER_EXAMPLE}")
        owned = {("params", *layer.path, name) for layer in layers for name in layer.params}
        leaves = jax.tree_util.tree_flatten_with_path(params)[0]
        unowned = ["/".join(_key_names(key_path)) for key_path, _ in leaves if _key_names(key_path) not in owned]
        if unowned:
            more = f" and {len(unowned) - 4} more" if len(unowned) > 4 else ""
            raise ValueError(f"ghost clipping cannot compute the per-example gradient of parameter "
                             f"{', '.join(map(repr, unowned[:4]))}{more}: not a parameter of a flax.linen Dense, "
                             f"Conv or GroupNorm layer or a dpedu.models.WSConv (exactly these classes) called in "
                             f"the forward pass; {_USE_PER_EXAMPLE}")
        return layers

    def layer_plan(self, params: PyTree, inputs, *, augmult: bool = False) -> dict[str, str]:
        """How each layer's per-example gradient norm is computed, by layer path.

        ``"ghost norm"`` (the Gram identity, no per-example gradient) or ``"per-example gradient"``
        (``Σ_p a_{i,p} g_{i,p}ᵀ`` formed per example). A Dense or Conv layer gets whichever needs
        fewer multiplications for its ``P`` positions, ``K`` inputs and ``F`` outputs:
        per-example when ``K·F <= P²·(K + F)``. A GroupNorm (``[B, C]`` gradients) and a
        weight-standardised convolution (its gradients pass through the standardisation's
        Jacobian) always form them (see the module docstring).

        Args:
            params: the model's variables (``{"params": ...}``).
            inputs: a batch ``[B, ...]`` (``[B, K, ...]`` with ``augmult``), or its shape as a
                ``jax.ShapeDtypeStruct``.
            augmult: ``inputs`` carries augmented copies on axis 1.

        Returns:
            ``{"Conv_0": "per-example gradient", "Dense_0": "ghost norm", ...}`` in call order.

        Raises:
            ValueError: the model is not supported (the message names the layer or parameter).

        Taught in notebooks/03_dpsgd_mnist.ipynb.
        """
        if not isinstance(inputs, jax.ShapeDtypeStruct):
            inputs = jax.ShapeDtypeStruct(np.shape(inputs), jnp.result_type(inputs))
        flat, _ = _flatten_copies(inputs, augmult)
        plan = {}
        for layer in self._layers(params, flat):
            explicit = True
            if layer.kind in (_DENSE, _CONV):
                a = jax.ShapeDtypeStruct(layer.input_shape, jnp.float32)
                shapes = jax.eval_shape(lambda x, g, layer=layer: _positions(layer, x, g, flat.shape[0]), a,
                                        layer.output)
                explicit = _explicit(*shapes)
            plan[layer.name] = "per-example gradient" if explicit else "ghost norm"
        return plan

    def clipped_grad_sum(self, params: PyTree, inputs, labels, mask, l2_clip_norm, *,
                         augmult: bool = False) -> tuple[PyTree, jax.Array]:
        """``Σᵢ maskᵢ · clip(∂lossᵢ/∂params, C)`` and the ``[B]`` norms, by ghost clipping.

        Abadi et al. 2016, Algorithm 1 ("Clip gradient", summed), computed as the module
        docstring describes: one batched forward pass and one backward pass to the layer outputs,
        then per layer the norm (ghost norm or explicit per-example gradient; GroupNorm's
        ``[B, C]`` gradients; a weight-standardised convolution's pulled through the
        standardisation) and the weighted sum (``(w ⊙ A)ᵀ G``, or of the per-example gradients).
        With ``augmult`` each example's loss is the mean over its K copies (De et al. 2022, §3.1):
        the copies are further positions of the same example, so the mean gradient is clipped, as
        :func:`dpedu.clipping.mean_over_copies` does.

        Formal guarantees:
            In exact arithmetic the result equals :func:`dpedu.clipping.clipped_grad`'s sum
            (tested for every model of :data:`dpedu.models.MODELS` against a one-example loop to
            1e-5 of each parameter's largest entry: float32 sums over many positions cancel; in
            float64 for the Wide-ResNets and the CIFAR-10 CNN, whose own float32 gradients are
            less accurate than that with random parameters), so it has l2 sensitivity ``C``
            under adding or removing one example, for any padding — provided the model never
            mixes the examples of a batch (each row of every layer depends on its own example
            only). Each example's contribution is ``wᵢ`` times the gradient whose norm set
            ``wᵢ``, both computed from the same ``(aᵢ, gᵢ)`` (for a weight-standardised
            convolution the same linear map ``J_Sᵀ`` takes both to the parameters), so it has norm
            ``<= C`` up to float rounding. The norm covers exactly the model's parameters
            (checked: any other parameter raises). Rows with ``maskᵢ`` False or a non-finite norm
            are replaced by zeros before the sum (a ``where``, not a product), so a NaN never
            leaks into the sum.

        Edge cases:

            ============================  ==========================================
            input                          result
            ============================  ==========================================
            ``maskᵢ`` False                example ``i`` contributes exactly 0
            NaN / inf in example ``i``     contributes 0; its norm is NaN / inf
            all-False ``mask``             exact zeros
            ``C == 0``                     exact zeros
            ``C == inf``                   the unclipped sum of the finite examples
            norm overflow (``> ~1e19``)    norm inf: contributes 0 (never more than C)
            ============================  ==========================================

        Args:
            params: the model's variables (``{"params": ...}``).
            inputs: ``[B, ...]`` (``[B, K, ...]`` with ``augmult``).
            labels: ``[B]``.
            mask: bool ``[B]``; False marks padding.
            l2_clip_norm: ``C`` in ``[0, inf]``.
            augmult: ``inputs`` carries K augmented copies per example on axis 1.

        Returns:
            ``(grad_sum, norms)``: the clipped sum (structure of ``params``) and every example's
            pre-clipping gradient norm (padding included, as the other methods report).

        Raises:
            ValueError: an unsupported model (a parameter outside the supported layers, a layer
                option such as grouped or dilated convolution: the message names it), or
                ``l2_clip_norm`` outside ``[0, inf]``.

        Taught in notebooks/03_dpsgd_mnist.ipynb.
        """
        inputs, labels = jnp.asarray(inputs), jnp.asarray(labels)
        batch = labels.shape[0]
        flat, copies = _flatten_copies(inputs, augmult)
        layers = self._layers(params, jax.ShapeDtypeStruct(flat.shape, flat.dtype))
        output_grads, layer_inputs = self._output_grads(params, flat, labels, copies, layers)
        flat_params, treedef = jax.tree_util.tree_flatten_with_path(params)
        leaves = {_key_names(key_path): leaf for key_path, leaf in flat_params}

        squared_norms, totals = jnp.zeros(batch, jnp.result_type(jnp.float32, *output_grads)), []
        for layer, a, g in zip(layers, layer_inputs, output_grads):
            squared, total = _layer_grads(layer, a, g, batch, leaves)
            squared_norms += squared
            totals.append(total)
        norms = jnp.sqrt(squared_norms)

        weights = clipping.clip_factors(norms, mask, l2_clip_norm)
        kept = weights > 0

        def rows(x):  # zero the rows of dropped examples (a NaN row times 0 would still be NaN)
            return jnp.where(kept.reshape(-1, *[1] * (x.ndim - 1)), x, jnp.zeros_like(x))

        sums = {}
        for total in totals:
            sums.update(total(weights, rows))
        grad_sum = []
        for key_path, leaf in flat_params:
            summed = sums[_key_names(key_path)]
            if summed.shape != jnp.shape(leaf):
                raise ValueError(f"ghost clipping computed shape {summed.shape} for parameter "
                                 f"{'/'.join(_key_names(key_path))!r} of shape {jnp.shape(leaf)}; {_USE_PER_EXAMPLE}")
            grad_sum.append(summed.astype(jnp.result_type(leaf)))
        return jax.tree_util.tree_unflatten(treedef, grad_sum), norms

    def _output_grads(self, params, flat_inputs, labels, copies, layers):
        """``(gradients of Σᵢ lossᵢ at each layer's output, each layer's input)``, one backward pass."""

        def total_loss(perturbations):
            layer_inputs = []

            def interceptor(next_fun, args, kwargs, context):
                output = next_fun(*args, **kwargs)
                if not _captured(context):
                    return output
                index = len(layer_inputs)
                if index >= len(layers) or tuple(context.module.path) != layers[index].path:
                    raise ValueError(f"the model called its layers in a different order on the second pass "
                                     f"(data-dependent structure); {_USE_PER_EXAMPLE}")
                layer_inputs.append(_layer_input(args, kwargs))
                return output + perturbations[index]

            with nn.intercept_methods(interceptor):
                logits = self.module.apply(params, flat_inputs)
            losses = jax.vmap(self.example_loss)(logits, jnp.repeat(labels, copies))
            # Σᵢ lossᵢ, each example's loss the mean over its copies (De et al. 2022, §3.1).
            return jnp.sum(jnp.mean(losses.reshape(labels.shape[0], copies), axis=1)), layer_inputs

        zeros = [jnp.zeros(layer.output.shape, layer.output.dtype) for layer in layers]
        return jax.grad(total_loss, has_aux=True)(zeros)


def _explicit(a, g) -> bool:
    """Whether forming each example's ``[K, F]`` gradient costs no more than the ghost norm's Gram
    matrices: ``P·K·F`` against ``P²·(K + F)`` multiplications (the sum's ``P·K·F`` is then saved)."""
    k, positions, f = a.shape[1], a.shape[2], g.shape[2]
    return k * f <= positions * positions * (k + f)


def _keep(a, g) -> bool:
    """Where the norm formed each example's ``[K, F]`` gradient, whether the clipped sum reuses it
    (a dot with the clip factors over the examples: XLA's reduction over the leading axis of
    ``[B, K, F]`` was ~10x slower on CPU) or recomputes ``Σᵢ (wᵢ Aᵢ) Gᵢ`` from the layer's
    ``(A, G)`` (book-keeping, one more matrix product): reuse when the ``[B, K, F]`` gradients
    take no more memory than ``(A, G)``, so that larger ones need not outlive the norms (WRN-16-4,
    batch 16: 394 instead of 480 MiB of XLA scratch, no slower)."""
    k, positions, f = a.shape[1], a.shape[2], g.shape[2]
    return k * f <= positions * (k + f)


def _flatten_copies(inputs, augmult: bool):
    """``([B·K, ...] inputs, K)`` with ``augmult`` (copies of one example adjacent), else ``(inputs, 1)``."""
    if not augmult:
        return inputs, 1
    shape = inputs.shape
    if len(shape) < 2:
        raise ValueError(f"inputs must have shape [B, K, ...] with augmult, got {shape}")
    flat_shape = (shape[0] * shape[1], *shape[2:])
    if isinstance(inputs, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(flat_shape, inputs.dtype), shape[1]
    return inputs.reshape(flat_shape), shape[1]


def _key_names(key_path) -> tuple[str, ...]:
    names = []
    for key in key_path:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                names.append(str(getattr(key, attribute)))
                break
    return tuple(names)
