"""What float rounding can do to one layer: an elementwise error envelope.

A fixed rel_l2 bound cannot tell a small bug from rounding: a bias missing from a
layer whose outputs are in the thousands moves rel_l2 by 1e-5 and looks like
rounding, while a long dot product that cancels to near zero rounds to a large
relative error and looks like a bug. So each output element gets the error that
rounding at the candidate's precision (unit roundoff u) can produce for it:

    tau = C_ACC * sqrt(K) * u * M    (the layer's linear part, K products summed)
        + F * C_OUT * u * |y|        (rounding of the result, the activation's own error)
        + F * C_ABS * u * max|y|     (cancellation: values near zero in a tensor of scale max|y|)

M is the layer's linear part recomputed on |x| with |weights| (the sum of the
magnitudes that were added), K the accumulation length (a Dense's fan-in, a
convolution's window x channels), F = C_FUNCTION for a transcendental activation
(tanh, sigmoid, softmax, the exp-based ones) and 1 otherwise. The linear part's
bound is carried through the activation by evaluating it at z +- tau. The layer's
error is within rounding when ||candidate - exact||_2 <= ||tau||_2. Layers with no
modelled linear part (recurrent, attention, feature normalisation, keras.ops) keep
the fixed bound: ||tau|| = the rounding threshold times ||y||.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from workers.backends.numpy.activations import activation_name, get_activation
from workers.backends.numpy.port import LAYERS
from workers.engine.graph import LayerSpec

# sqrt(K) u sum|x w| is the probabilistic bound on a K-term dot product's rounding
# (Higham & Mary, 2019); the constants leave room for summation orders and fused
# multiply-adds: keras-cpu (oneDNN on and off), the numpy port and the TF.js backends
# use at most a fifth of the envelope on the examples.
C_ACC = 1.0
C_OUT = 4.0
C_ABS = 2.0
# Transcendental functions are computed to a few ulps on CPUs, less closely by GPU
# shaders (SwiftShader's tanh: about 3 ulps of its output's scale).
C_FUNCTION = 8.0
TRANSCENDENTAL = frozenset(
    {
        "tanh",
        "sigmoid",
        "softmax",
        "log_softmax",
        "softplus",
        "elu",
        "selu",
        "gelu",
        "silu",
        "swish",
        "mish",
        "exponential",
        "softsign",
        "tanh_shrink",
        "log_sigmoid",
    }
)

Config = dict[str, Any]
# The least normal float32: magnitudes summed in float32 below it may have lost terms.
FLOAT32_NORMAL = float(np.finfo(np.float32).tiny)
Weights = dict[str, np.ndarray]


def _window(layer: LayerSpec) -> int:
    kernel = layer.weights.get("kernel", layer.weights.get("depthwise_kernel"))
    return int(np.prod(kernel.shape[: kernel.ndim - 2])) if kernel is not None else 1


def _fan_in(layer: LayerSpec, inputs: list[np.ndarray]) -> int:
    kernel = layer.weights["kernel"]
    return int(np.prod(kernel.shape[:-1]))


def _separable(layer: LayerSpec, inputs: list[np.ndarray]) -> int:
    return _window(layer) + int(layer.weights["pointwise_kernel"].shape[-2])


def _transpose(layer: LayerSpec, inputs: list[np.ndarray]) -> int:
    kernel = layer.weights["kernel"]
    return int(np.prod(kernel.shape[:-2])) * int(kernel.shape[-1])


def _pool_size(layer: LayerSpec, inputs: list[np.ndarray]) -> int:
    size = layer.config["pool_size"]
    return int(np.prod(size)) if isinstance(size, list | tuple) else int(size)


def _global_size(layer: LayerSpec, inputs: list[np.ndarray]) -> int:
    shape = inputs[0].shape
    spatial = shape[2:] if layer.config.get("data_format") == "channels_first" else shape[1:-1]
    return int(np.prod(spatial))


def _count(layer: LayerSpec, inputs: list[np.ndarray]) -> int:
    return len(inputs)


def _constant(k: int) -> Callable[[LayerSpec, list[np.ndarray]], int]:
    return lambda layer, inputs: k


# Layers whose pre-activation output is linear in their inputs (and weights), so the
# magnitudes summed are the layer run on |x| with |weights|; with their accumulation length.
LINEAR_PART: dict[str, Callable[[LayerSpec, list[np.ndarray]], int]] = {
    "Dense": _fan_in,
    "Conv1D": _fan_in,
    "Conv2D": _fan_in,
    "Conv3D": _fan_in,
    "DepthwiseConv2D": lambda layer, inputs: _window(layer),
    "SeparableConv2D": _separable,
    "Conv1DTranspose": _transpose,
    "Conv2DTranspose": _transpose,
    "Conv3DTranspose": _transpose,
    "AveragePooling1D": _pool_size,
    "AveragePooling2D": _pool_size,
    "AveragePooling3D": _pool_size,
    "GlobalAveragePooling2D": _global_size,
    "GlobalAveragePooling3D": _global_size,
    "BatchNormalization": _constant(3),
    "Add": _count,
    "Subtract": _count,
    "Average": _count,
    "Rescaling": _constant(2),
    "LayerScale": _constant(1),
    "UpSampling1D": _constant(2),
    "UpSampling2D": _constant(4),
    "UpSampling3D": _constant(8),
    "Resizing": _constant(4),
}
# Layers that only move, pick or pointwise-transform their inputs: their result's own
# rounding (and the function's, for activations) is all the error they may add.
POINTWISE = frozenset(
    {
        "Activation",
        "ReLU",
        "LeakyReLU",
        "ELU",
        "PReLU",
        "Softmax",
        "Flatten",
        "Reshape",
        "Permute",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Identity",
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "RepeatVector",
        "Concatenate",
        "Multiply",
        "Maximum",
        "Minimum",
        "Embedding",
        "Masking",
        "CenterCrop",
    }
)
# Layer classes that are an activation function and nothing else.
ACTIVATION_LAYERS = frozenset({"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"})


# The function each activation layer class (bar Activation, which names it) computes.
LAYER_FUNCTION = {"ReLU": "relu", "ELU": "elu", "LeakyReLU": "leaky_relu", "Softmax": "softmax"}


def activation_of(layer: LayerSpec) -> str:
    """The activation a layer applies after its linear part ('linear' for none)."""
    if layer.class_name in ACTIVATION_LAYERS:
        return "linear"
    return activation_name(layer.config.get("activation"))


def apply_layer(
    layer: LayerSpec,
    inputs: list[np.ndarray],
    config: Config | None = None,
    weights: Weights | None = None,
    dtype: type[np.floating[Any]] = np.float64,
) -> np.ndarray:
    """The layer through the numpy port, in float64 unless `dtype` says otherwise, with a
    config or weights replaced; the result in float64."""
    values = layer.weights if weights is None else weights
    return np.asarray(
        LAYERS[layer.class_name](
            [np.asarray(x, dtype=dtype) for x in inputs],
            layer.config if config is None else config,
            {key: np.asarray(w, dtype=dtype) for key, w in values.items()},
        ),
        dtype=np.float64,
    )


def pre_activation(
    layer: LayerSpec,
    inputs: list[np.ndarray],
    config: Config | None = None,
    weights: Weights | None = None,
    dtype: type[np.floating[Any]] = np.float64,
) -> np.ndarray:
    """The layer's output before its activation (the output itself when it has none)."""
    config = layer.config if config is None else config
    if activation_of(layer) != "linear":
        config = {**config, "activation": "linear"}
    return apply_layer(layer, inputs, config, weights, dtype)


def activate(layer: LayerSpec, z: np.ndarray, name: str | None = None) -> np.ndarray:
    return get_activation(name or activation_of(layer))(z)


def function_of(layer: LayerSpec) -> str:
    """The activation a layer computes: its own activation, or the function an
    activation layer is."""
    if layer.class_name == "Activation":
        return activation_name(layer.config.get("activation"))
    return LAYER_FUNCTION.get(layer.class_name, activation_of(layer))


NO_NONZERO = np.iinfo(np.uint64).max


def _least_bits(array: np.ndarray) -> int:
    """The smallest nonzero magnitude's float64 bits less one (NO_NONZERO where all are
    zero). A float32 array is read as 32-bit integers, its least widened after: float32
    converts to float64 exactly and in order (widening dense_1's kernel of cifar_cnn
    first took 2.3 ms a diagnosis)."""
    if array.dtype != np.float32:
        bits = np.abs(array, dtype=np.float64).view(np.uint64)
        bits -= np.uint64(1)
        return int(bits.min())
    narrow = np.abs(array).view(np.uint32)
    narrow -= np.uint32(1)
    least = narrow.min()
    if least == np.iinfo(np.uint32).max:
        return NO_NONZERO
    return int(np.float64((least + np.uint32(1)).view(np.float32)).view(np.uint64)) - 1


def _smallest(arrays: list[np.ndarray]) -> float:
    """The smallest nonzero magnitude among the arrays' values (1 where all are zero), by
    their bits: a magnitude's bits order as its value does, and zero's bits less one wrap
    to the largest unsigned value, so a plain minimum skips the zeros (a quarter of the
    time of copying the nonzero values out, and a masked minimum is slower still). NaN's
    bits come after every number's: a NaN counts as no value."""
    least = min((_least_bits(array) for array in arrays if array.size), default=NO_NONZERO)
    if least == NO_NONZERO:
        return 1.0
    return float(np.uint64(least + 1).view(np.float64))


def _magnitudes(layer: LayerSpec, inputs: list[np.ndarray]) -> np.ndarray:
    """The sum of magnitudes behind each element of the linear part: the layer on |x|
    with |weights|. A subtracted weight (a batch normalisation's moving mean) goes in
    negated, so x - mean sums |x| + |mean|. Summed in float32 where that loses nothing a
    bound needs: a sum of K positive terms is off by at most K * 6e-8 relative, inside
    the constants' slack, and float32 costs half of float64 (cifar_cnn's convolutions on
    8 samples: 25 of a diagnosis's 70 ms in float64). In float64 where a value is not
    finite, where a product of an input and a weight could fall below float32's normal
    range (terms lost would tighten the bound), or where the sums overflow float32."""
    absolute = {key: np.abs(value) for key, value in layer.weights.items()}
    if "moving_mean" in absolute:
        absolute["moving_mean"] = -absolute["moving_mean"]
    positive = [np.abs(x) for x in inputs]
    finite = all(all_finite(x) for x in positive)
    if finite and _smallest(positive) * _smallest(list(absolute.values())) >= FLOAT32_NORMAL:
        with np.errstate(over="ignore"):
            summed = np.abs(pre_activation(layer, positive, weights=absolute, dtype=np.float32))
        if all_finite(summed):
            return summed
    return np.abs(pre_activation(layer, positive, weights=absolute))


def all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite, from the extremes alone: NaN and Inf reach them
    (two reductions, without the array of flags np.isfinite makes)."""
    return not values.size or bool(np.isfinite(values.max()) and np.isfinite(values.min()))


def _largest_finite(values: np.ndarray) -> float:
    """The largest finite magnitude among the values (0 where there is none)."""
    if all_finite(values):
        return float(max(abs(values.max()), abs(values.min()))) if values.size else 0.0
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size else 0.0


def through_activation(name: str, z: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A bound t on z's error carried through the activation to y."""
    if name == "linear":
        return t
    if name in ("softmax", "log_softmax"):
        spread = 2.0 * np.max(t, axis=-1, keepdims=True)
        return spread * np.abs(y) if name == "softmax" else spread
    function = get_activation(name)
    # In place on the fresh arrays the activations return (one is their input, z +- t):
    # the same values as the one-line form, in two temporaries instead of eight.
    with np.errstate(over="ignore", invalid="ignore"):
        above, below = function(z + t), function(z - t)
        for moved in (above, below):
            np.subtract(moved, y, out=moved)
            np.abs(moved, out=moved)
        np.maximum(above, below, out=above)
        return np.nan_to_num(above, copy=False, posinf=np.inf)


# The activations after a linear part whose envelope is computed by the compiled kernels.
COMPILED_ACTIVATIONS = frozenset({"linear", "relu"})


def _linear_part_bound(layer: LayerSpec, inputs: list[np.ndarray], unit: float) -> np.ndarray:
    """C_ACC * sqrt(K) * u * M: the bound on the linear part's rounding."""
    k = max(LINEAR_PART[layer.class_name](layer, inputs), 1)
    t = _magnitudes(layer, inputs)
    t *= C_ACC * math.sqrt(k) * unit
    return t


def _compiled_envelope(
    layer: LayerSpec, inputs: list[np.ndarray], z: np.ndarray, relu: bool, unit: float
) -> tuple[np.ndarray, np.ndarray]:
    """What rounding_envelope computes for a linear part with no activation or a ReLU (an
    activation that is not transcendental), in two compiled passes."""
    from workers.diagnosis import envelope_kernels as kernels  # numba: only where diagnosing

    # Writable too: numba compiles another kernel for a read-only array.
    z = np.require(z, np.float64, ["C_CONTIGUOUS", "WRITEABLE"])
    y = np.empty_like(z)
    scale = kernels.activated(z.reshape(-1), relu, y.reshape(-1))
    t = _linear_part_bound(layer, inputs, unit)
    tau = np.empty_like(z)
    kernels.envelope(
        z.reshape(-1),
        y.reshape(-1),
        t.reshape(-1),
        relu,
        C_OUT,
        C_ABS * scale,
        unit,
        tau.reshape(-1),
    )
    return y, tau


def load_kernels() -> None:
    """Compile the envelope's kernels, or load them from numba's cache (through
    workers/kernels.py, with the comparison's). Every array they are given is float64
    (what apply_layer returns), C-ordered and writable, as here: numba would compile
    anew at run time for another dtype or layout."""
    from workers.diagnosis import envelope_kernels as kernels

    z = np.zeros(1)
    kernels.activated(z, True, np.empty(1))
    kernels.envelope(z, z, np.zeros(1), True, C_OUT, 0.0, 1.0, np.empty(1))


def rounding_envelope(
    layer: LayerSpec, inputs: list[np.ndarray], unit: float, fixed_rel_l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """The layer's exact float64 output from these inputs, and the elementwise error
    rounding at unit roundoff `unit` can put on it (see the module docstring)."""
    name = activation_of(layer)
    z = pre_activation(layer, inputs)
    if layer.class_name in LINEAR_PART and name in COMPILED_ACTIVATIONS:
        return _compiled_envelope(layer, inputs, z, name == "relu", unit)
    y = activate(layer, z, name)
    scale = _largest_finite(y)
    factor = C_FUNCTION if function_of(layer) in TRANSCENDENTAL else 1.0
    # factor * unit * (C_OUT * |y| + C_ABS * scale), the same operations in place.
    result = np.abs(y)
    result *= C_OUT
    result += C_ABS * scale
    result *= factor * unit
    if layer.class_name in LINEAR_PART:
        result += through_activation(name, z, y, _linear_part_bound(layer, inputs, unit))
        return y, result
    if layer.class_name in POINTWISE:
        return y, result
    finite = np.isfinite(y)
    rms = float(np.sqrt(np.mean(np.square(y[finite])))) if finite.any() else 0.0
    return y, np.full(y.shape, fixed_rel_l2 * rms)
