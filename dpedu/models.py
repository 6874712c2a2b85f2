"""The course's models, in Flax linen, and a registry of them by name.

Three families, each as the paper that introduced it describes it:

* :class:`AbadiMLP`: Abadi et al. 2016, "Deep Learning with Differential Privacy", §5.2 (MNIST):
  a 60-dimensional (DP-)PCA projection (computed by :mod:`dpedu.pca`, applied to the data before the
  model), one hidden layer of 1,000 ReLU units, softmax over 10 classes.
* :class:`TanhCNN`: Tramèr & Boneh 2021, "Differentially Private Learning Needs Better Features
  (or Much More Data)": the end-to-end CNNs (tanh activations) exactly as in their released code.
* :class:`WideResNet`: WRN-d-k (Zagoruyko & Komodakis 2016) as De et al. 2022, "Unlocking
  High-Accuracy Differentially Private Image Classification through Scale" use it (as in their
  jax_privacy code): group normalisation (16 groups) instead of batch normalisation,
  weight-standardised convolutions, pre-activation blocks (activation, norm, conv).

No model here uses batch normalisation: it mixes the examples of a batch, so one example's
gradient would depend on the others and per-example clipping would no longer bound its influence.
Group normalisation and weight standardisation act on one example (or on the weights) only.

Every ``__call__`` takes a batch (leading axis) and returns logits; a per-example loss adds the
batch axis itself (``model.apply(params, x[None])[0]``).

Taught in notebooks/03_dpsgd_mnist.ipynb and notebooks/04_cifar10_ladder.ipynb.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class AbadiMLP(nn.Module):
    """Abadi et al. 2016 (§5.2) MNIST network on top of a fixed PCA projection.

    Input: the (DP-)PCA projection of the flattened image, ``(batch, projection_dims)`` (60 in the
    paper; :func:`dpedu.pca.dp_pca_projection` computes the projection matrix). Then one hidden
    layer of ``hidden_units`` ReLU units (1,000 in the paper) and ``num_classes`` logits.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """

    hidden_units: int = 1000
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden_units, name="hidden")(x))
        return nn.Dense(self.num_classes, name="logits")(x)


# Tramèr & Boneh 2021, as in their released PyTorch code (Handcrafted-DP, models.py): each conv is
# (features, kernel, stride, padding) followed by tanh; "M" is a 2x2 max-pool of the given stride.
TANH_CNN_LAYERS = {
    # MNIST: conv 16 8x8 /2 pad 2 -> 13x13, pool /1 -> 12x12, conv 32 4x4 /2 -> 5x5, pool /1 -> 4x4.
    "mnist": ((16, 8, 2, 2), ("M", 1), (32, 4, 2, 0), ("M", 1)),
    # CIFAR-10: (conv 3x3 pad 1, conv 3x3 pad 1, pool /2) with 32, 64, 128 channels -> 4x4x128.
    "cifar10": (
        (32, 3, 1, 1), (32, 3, 1, 1), ("M", 2),
        (64, 3, 1, 1), (64, 3, 1, 1), ("M", 2),
        (128, 3, 1, 1), (128, 3, 1, 1), ("M", 2),
    ),
}
# The classifier's hidden layer: 32 units (MNIST) and 128 units (CIFAR-10), tanh, then 10 logits.
TANH_CNN_HIDDEN = {"mnist": 32, "cifar10": 128}


def max_pool_2x2(x: jax.Array, stride: int) -> jax.Array:
    """2x2 max-pooling (VALID) of an NHWC batch: the same values as ``nn.max_pool(x, (2, 2),
    strides=(stride, stride))``, computed as the maximum of the window's four shifted views.

    Why not ``nn.max_pool``: its gradient is XLA's select-and-scatter, which on CPU took about
    two thirds of the MNIST CNN's training step (with ``jax.vmap`` per-example gradients too);
    the gradient of ``jnp.maximum`` is elementwise (it splits a tie evenly where select-and-scatter
    picks one element; both are valid subgradients).

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    height, width = (x.shape[1] - 2) // stride + 1, (x.shape[2] - 2) // stride + 1
    views = [x[:, i:i + stride * (height - 1) + 1:stride, j:j + stride * (width - 1) + 1:stride]
             for i in (0, 1) for j in (0, 1)]
    return jnp.maximum(jnp.maximum(views[0], views[1]), jnp.maximum(views[2], views[3]))


class TanhCNN(nn.Module):
    """Tramèr & Boneh 2021 end-to-end CNN, tanh activations throughout.

    ``variant="mnist"`` (26,010 parameters, input 28x28x1) or ``"cifar10"`` (550,570 parameters,
    input 32x32x3). The MNIST net pads its first conv by 2 pixels as their code does (a "SAME"
    padding would pad by 3 and give 14x14 maps, but the same 4x4x32 features and parameter count).
    Tanh rather than ReLU follows Papernot et al. 2021 ("tempered sigmoids"): a bounded activation
    keeps gradient norms small, so less is lost to clipping.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """

    variant: str = "mnist"
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.variant not in TANH_CNN_LAYERS:
            raise ValueError(f"variant must be one of {sorted(TANH_CNN_LAYERS)}, got {self.variant!r}")
        for layer in TANH_CNN_LAYERS[self.variant]:
            if layer[0] == "M":
                x = max_pool_2x2(x, layer[1])
            else:
                features, kernel, stride, pad = layer
                x = nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)))(x)
                x = jnp.tanh(x)
        x = x.reshape((x.shape[0], -1))
        x = jnp.tanh(nn.Dense(TANH_CNN_HIDDEN[self.variant])(x))
        return nn.Dense(self.num_classes)(x)


def standardize_weight(kernel: jax.Array, gain: jax.Array, eps: float = 1e-4) -> jax.Array:
    """Scaled weight standardisation of an HWIO kernel (Brock et al. 2021, eq. 2).

    Each output channel's weights get zero mean and variance ``1 / fan_in`` (times ``gain``):
    ``gain * (W - mean(W)) / sqrt(max(fan_in * var(W), eps))``, statistics over H, W and I.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """
    fan_in = np.prod(kernel.shape[:-1])
    mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
    var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
    return (kernel - mean) * jax.lax.rsqrt(jnp.maximum(var * fan_in, eps)) * gain


class WSConv(nn.Module):
    """Convolution with scaled weight standardisation, a per-channel gain and a bias.

    Qiao et al. 2019 / Brock et al. 2021 (NF-Nets), as De et al. 2022 use it: each output channel's
    kernel is standardised over its fan-in by :func:`standardize_weight` before the convolution.
    It acts on the weights only, so it never mixes examples.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    strides: int = 1
    eps: float = 1e-4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.variance_scaling(1.0, "fan_in", "normal"), kernel_shape)
        gain = self.param("gain", nn.initializers.ones, (self.features,))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jax.lax.conv_general_dilated(
            x, standardize_weight(kernel, gain, self.eps), window_strides=(self.strides, self.strides),
            padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + bias


class WideResNet(nn.Module):
    """WRN-``depth``-``width`` as De et al. 2022 train it with DP-SGD on CIFAR-10.

    Layout (Zagoruyko & Komodakis 2016, pre-activation; block order as in De et al.'s jax_privacy
    code): a 3x3 conv with 16 channels; three stages of ``(depth - 4) // 6`` residual blocks with
    ``16*width``, ``32*width``, ``64*width`` channels (stride 1, 2, 2); each block is twice
    (activation, norm, 3x3 conv), and the first block of a stage has a 1x1-conv shortcut (after
    activation and norm); then activation, norm, global average pooling and a dense layer.

    Args:
        depth: 6n+4 (16 -> 2 blocks per stage, 40 -> 6).
        width: the widening factor k.
        norm: ``"group"`` (De et al.: GroupNorm with ``groups`` groups) or ``"none"``.
        groups: number of groups for group normalisation (16 in De et al.).
        weight_standardization: weight-standardised convolutions (De et al.: yes).
        num_classes: logits.

    Taught in notebooks/04_cifar10_ladder.ipynb.
    """

    depth: int = 16
    width: int = 4
    norm: str = "group"
    groups: int = 16
    weight_standardization: bool = True
    num_classes: int = 10

    def _check(self) -> None:
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {self.depth!r}")
        if self.width < 1:
            raise ValueError(f"width must be an integer >= 1, got {self.width!r}")
        if self.norm not in ("group", "none"):
            raise ValueError(f"norm must be 'group' or 'none' (never batch norm: it mixes examples), got {self.norm!r}")
        if self.norm == "group" and not (1 <= self.groups <= 16 and 16 % self.groups == 0):
            raise ValueError(f"groups must divide 16 (the narrowest layer's channels), got {self.groups!r}")

    def _conv(self, features: int, kernel: int, stride: int, name: str) -> nn.Module:
        if self.weight_standardization:
            return WSConv(features, (kernel, kernel), stride, name=name)
        return nn.Conv(features, (kernel, kernel), strides=stride, padding="SAME", name=name)

    def _norm(self, name: str) -> Callable[[jax.Array], jax.Array]:
        if self.norm == "group":
            # epsilon as in haiku's GroupNorm, which De et al. use.
            return nn.GroupNorm(num_groups=self.groups, epsilon=1e-5, name=name)
        return lambda x: x

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        self._check()
        blocks = (self.depth - 4) // 6
        x = self._conv(16, 3, 1, "conv_first")(x)
        for stage, (channels, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            for block in range(blocks):
                name = f"stage{stage}_block{block}"
                shortcut = x
                if block == 0:
                    shortcut = self._norm(f"{name}_shortcut_norm")(nn.relu(shortcut))
                    shortcut = self._conv(channels * self.width, 1, stride, f"{name}_shortcut_conv")(shortcut)
                for j in range(2):
                    x = self._norm(f"{name}_norm{j}")(nn.relu(x))
                    x = self._conv(channels * self.width, 3, stride if (block == 0 and j == 0) else 1,
                                   f"{name}_conv{j}")(x)
                x = x + shortcut
        x = self._norm("norm_final")(nn.relu(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="logits")(x)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: which module with which arguments, and what one example looks like.

    Attributes:
        module: the Flax module class.
        kwargs: its constructor arguments.
        input_shape: the shape of ONE example (no batch axis).
        num_classes: number of logits.
        description: what it is and which paper it comes from.
    """

    module: type
    kwargs: dict
    input_shape: tuple[int, ...]
    num_classes: int
    description: str

    def make(self, **overrides) -> nn.Module:
        """The module, with ``overrides`` replacing registered arguments (e.g. ``norm="none"``)."""
        return self.module(**{**self.kwargs, **overrides})


MODELS: dict[str, ModelSpec] = {
    "mnist-mlp-pca": ModelSpec(
        AbadiMLP, {}, (60,), 10, "Abadi et al. 2016: 60-dim PCA projection -> 1000 ReLU -> 10",
    ),
    "mnist-cnn": ModelSpec(
        TanhCNN, {"variant": "mnist"}, (28, 28, 1), 10,
        "Tramèr & Boneh 2021 MNIST CNN (tanh, 26,010 parameters)",
    ),
    "cifar10-cnn": ModelSpec(
        TanhCNN, {"variant": "cifar10"}, (32, 32, 3), 10,
        "Tramèr & Boneh 2021 CIFAR-10 CNN (tanh, 550,570 parameters)",
    ),
    "wrn-16-4": ModelSpec(
        WideResNet, {"depth": 16, "width": 4}, (32, 32, 3), 10,
        "De et al. 2022 WRN-16-4: GroupNorm(16) + weight standardisation",
    ),
    "wrn-40-4": ModelSpec(
        WideResNet, {"depth": 40, "width": 4}, (32, 32, 3), 10,
        "De et al. 2022 WRN-40-4: GroupNorm(16) + weight standardisation",
    ),
    "wrn-tiny": ModelSpec(
        WideResNet, {"depth": 10, "width": 1}, (32, 32, 3), 10,
        "WRN-10-1 with GroupNorm(16) + weight standardisation (quick mode and tests)",
    ),
}


def get_model(name: str) -> ModelSpec:
    """The registered model ``name``; ValueError listing the valid names otherwise.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(sorted(MODELS))}; got {name!r}")
    return MODELS[name]


def init_params(name: str, seed: int, **overrides):
    """Builds model ``name`` (``overrides`` as :meth:`ModelSpec.make`) and initialises its
    parameters (jitted) from the integer ``seed``.

    The initialisation key uses JAX's ``"rbg"`` generator: on CPU, XLA compiles the default
    threefry generator's unrolled rounds for every parameter tensor, which made initialising a
    small WRN take 10 s of compile time; ``"rbg"`` takes a few tenths of that. (The DP noise keys
    are the trainer's own, from the default generator.)

    Returns:
        ``(module, params)``.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    spec = get_model(name)
    module = spec.make(**overrides)
    key = jax.random.key(seed, impl="rbg")
    params = jax.jit(module.init)(key, jnp.zeros((1, *spec.input_shape), jnp.float32))
    return module, params


def count_params(params) -> int:
    """Number of scalars in a parameter pytree.

    Taught in notebooks/03_dpsgd_mnist.ipynb.
    """
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))
