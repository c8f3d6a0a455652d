"""Every built-in Keras activation in plain numpy, keeping the input's dtype.

Written from the formulas in the Keras documentation, not from Keras code, the way
a careful hand port would; constants are Keras's defaults for the string form.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import special

Activation = Callable[[np.ndarray], np.ndarray]

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _cast(x: np.ndarray, value: float) -> np.generic:
    return x.dtype.type(value)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, _cast(x, 0))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return special.expit(x)


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(_cast(x, 0), x)


def softmax(x: np.ndarray, axis: int | tuple[int, ...] = -1) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    return np.where(x > 0, x, _cast(x, alpha) * np.expm1(np.minimum(x, _cast(x, 0))))


def leaky_relu(x: np.ndarray, negative_slope: float = 0.2) -> np.ndarray:
    return np.where(x >= 0, x, _cast(x, negative_slope) * x)


def gelu(x: np.ndarray, approximate: bool = False) -> np.ndarray:
    half = _cast(x, 0.5)
    if approximate:
        inner = _cast(x, math.sqrt(2.0 / math.pi)) * (x + _cast(x, 0.044715) * x * x * x)
        return half * x * (_cast(x, 1) + np.tanh(inner))
    return half * x * (_cast(x, 1) + special.erf(x / _cast(x, math.sqrt(2.0))))


def hard_sigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(x / _cast(x, 6) + _cast(x, 0.5), _cast(x, 0), _cast(x, 1))


def sparsemax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Euclidean projection onto the simplex (Martins & Astudillo, 2016)."""
    moved = np.moveaxis(x, axis, -1)
    z = np.sort(moved, axis=-1)[..., ::-1]
    k = np.arange(1, z.shape[-1] + 1, dtype=x.dtype)
    cumulative = np.cumsum(z, axis=-1)
    support = _cast(x, 1) + k * z > cumulative
    k_max = np.sum(support, axis=-1, keepdims=True)
    tau = (np.take_along_axis(cumulative, k_max - 1, axis=-1) - _cast(x, 1)) / k_max.astype(x.dtype)
    return np.moveaxis(np.maximum(moved - tau, _cast(x, 0)), -1, axis)


def glu(x: np.ndarray, axis: int = -1) -> np.ndarray:
    a, b = np.split(x, 2, axis=axis)
    return a * sigmoid(b)


ACTIVATIONS: dict[str, Activation] = {
    "linear": lambda x: x,
    "relu": relu,
    "relu6": lambda x: np.clip(x, _cast(x, 0), _cast(x, 6)),
    "leaky_relu": leaky_relu,
    "elu": elu,
    "selu": lambda x: _cast(x, SELU_SCALE) * elu(x, SELU_ALPHA),
    "celu": lambda x: relu(x) + np.minimum(_cast(x, 0), np.expm1(np.minimum(x, _cast(x, 0)))),
    "gelu": gelu,
    "sigmoid": sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "hard_silu": lambda x: x * hard_sigmoid(x),
    "hard_swish": lambda x: x * hard_sigmoid(x),
    "log_sigmoid": lambda x: -softplus(-x),
    "sparse_sigmoid": lambda x: np.clip((x + _cast(x, 1)) / _cast(x, 2), _cast(x, 0), _cast(x, 1)),
    "tanh": np.tanh,
    "hard_tanh": lambda x: np.clip(x, _cast(x, -1), _cast(x, 1)),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "hard_shrink": lambda x: np.where(np.abs(x) > _cast(x, 0.5), x, _cast(x, 0)),
    "soft_shrink": lambda x: np.sign(x) * np.maximum(np.abs(x) - _cast(x, 0.5), _cast(x, 0)),
    "softmax": softmax,
    "log_softmax": log_softmax,
    "sparsemax": sparsemax,
    "softplus": softplus,
    "sparse_plus": lambda x: np.where(
        x <= -1, _cast(x, 0), np.where(x >= 1, x, (x + _cast(x, 1)) ** 2 / _cast(x, 4))
    ),
    "squareplus": lambda x: (x + np.sqrt(x * x + _cast(x, 4))) / _cast(x, 2),
    "softsign": lambda x: x / (_cast(x, 1) + np.abs(x)),
    "silu": lambda x: x * sigmoid(x),
    "swish": lambda x: x * sigmoid(x),
    "mish": lambda x: x * np.tanh(softplus(x)),
    "exponential": np.exp,
    "glu": glu,
}


class UnknownActivation(KeyError):
    """An activation name outside the built-in set (or one that needs arguments)."""


def activation_name(spec: object) -> str:
    """Keras 3 writes a built-in activation as a string; older files as a small dict."""
    if spec is None:
        return "linear"
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and isinstance(spec.get("config"), str):
        return spec["config"]
    if isinstance(spec, dict) and isinstance(spec.get("class_name"), str):
        return spec["class_name"]
    raise UnknownActivation(f"activation {spec!r}")


def get_activation(spec: object) -> Activation:
    name = activation_name(spec)
    if name not in ACTIVATIONS:
        raise UnknownActivation(name)
    return ACTIVATIONS[name]
