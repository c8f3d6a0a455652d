"""keras.ops operations applied between layers (`x + 3.0`, `ops.tanh(a) * 0.5`), in numpy.

A Functional graph records each operation as a node whose config holds the
operation's own parameters (an axis, a shape) and the arguments it was called with,
tensors replaced by `{"input": i}` (see `workers.engine.graph`). Each function here
fills those arguments with the node's inputs and computes the NumPy equivalent of
the operation's documented semantics. A python float constant is, in the model Keras
runs, a float32 tensor: the float64 port uses that float32 value too (0.1 is
0.100000001490116...), or a mask `x != 0.1` would differ for no fault of anyone's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.special

from workers.backends.numpy.activations import (
    ACTIVATIONS,
    elu,
    gelu,
    leaky_relu,
    log_softmax,
    softmax,
)
from workers.backends.numpy.layers import Config, LayerConfigUnsupported, LayerFunction, Weights
from workers.engine.graph import OPERATION_PREFIX

ACTIVATION_OPERATIONS = (
    "Relu",
    "Relu6",
    "Sigmoid",
    "Softplus",
    "Softsign",
    "Silu",
    "HardSigmoid",
    "HardSilu",
    "Tanh",
    "LogSigmoid",
    "Selu",
    "HardTanh",
    "SparsePlus",
    "TanhShrink",
)


def _filled(value: Any, inputs: list[np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"input"}:
            return inputs[value["input"]]
        return {key: _filled(item, inputs) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, inputs) for item in value]
    if isinstance(value, float):
        return float(np.float32(value))
    return value


def _arguments(config: Config, inputs: list[np.ndarray]) -> tuple[list[Any], dict[str, Any]]:
    call = config["call"]
    return _filled(call["args"], inputs), _filled(call["kwargs"], inputs)


def _operation(function: Callable[..., np.ndarray]) -> LayerFunction:
    """An operation computed from its call arguments alone."""

    def apply(inputs: list[np.ndarray], config: Config, weights: Weights) -> np.ndarray:
        args, kwargs = _arguments(config, inputs)
        return function(*args, **kwargs)

    return apply


def _configured(function: Callable[..., np.ndarray], *keys: str) -> LayerFunction:
    """An operation whose parameters (axis, shape, ...) were given to its constructor and
    so sit in its config, while the call passes only the tensors."""

    def apply(inputs: list[np.ndarray], config: Config, weights: Weights) -> np.ndarray:
        args, _ = _arguments(config, inputs)
        return function(*args, **{key: config[key] for key in keys if key in config})

    return apply


def _snake(class_name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", class_name).lower()


def _activation_operations() -> dict[str, LayerFunction]:
    """keras.ops.nn's parameterless activations (Tanh, Relu6, HardSigmoid, Silu, ...) are
    the built-in activations of the same name."""
    return {
        OPERATION_PREFIX + class_name: _operation(ACTIVATIONS[_snake(class_name)])
        for class_name in ACTIVATION_OPERATIONS
    }


def _constant(x: np.ndarray, value: float) -> np.generic:
    """A python number as Keras uses it with a float32 tensor: a float32 value."""
    return x.dtype.type(np.float32(value))


def _celu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    alpha_, zero = _constant(x, alpha), _constant(x, 0)
    return np.maximum(x, zero) + alpha_ * np.expm1(np.minimum(x, zero) / alpha_)


def _squareplus(x: np.ndarray, b: float = 4) -> np.ndarray:
    return (x + np.sqrt(x * x + _constant(x, b))) / _constant(x, 2)


def _reduce(reduce: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """A reduction over `axis`; Max's and Min's `initial` joins the reduced values, as in
    NumPy and Keras (`ops.max(x, initial=0.0)` is never below 0)."""

    def apply(
        x: np.ndarray, axis: Any = None, keepdims: bool = False, initial: float | None = None
    ) -> np.ndarray:
        axes = None if axis is None else tuple(np.atleast_1d(axis))
        if initial is None:
            return reduce(x, axis=axes, keepdims=keepdims)
        return reduce(x, axis=axes, keepdims=keepdims, initial=_constant(x, initial))

    return apply


def _get_item(x: np.ndarray, key: Any) -> np.ndarray:
    return x[tuple(key) if isinstance(key, list) else key]


def _clip(x: np.ndarray, x_min: float | None, x_max: float | None) -> np.ndarray:
    return np.clip(
        x,
        None if x_min is None else _constant(x, x_min),
        None if x_max is None else _constant(x, x_max),
    )


def _cast(x: np.ndarray, dtype: Any = None) -> np.ndarray:
    """A cast to float32 keeps a float in the port's own precision (and makes a mask or an
    id a float); a cast to anything else would change values."""
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if name != "float32":
        raise LayerConfigUnsupported(f"cast to {name!r}")
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def _reshape(x: np.ndarray, newshape: Any) -> np.ndarray:
    return np.reshape(x, tuple(newshape))


OPERATIONS: dict[str, LayerFunction] = {
    **_activation_operations(),
    **{
        OPERATION_PREFIX + name: _operation(function)
        for name, function in {
            "Add": np.add,
            "Subtract": np.subtract,
            "Multiply": np.multiply,
            "Divide": np.divide,
            "TrueDivide": np.true_divide,
            "Power": np.power,
            "Maximum": np.maximum,
            "Minimum": np.minimum,
            "Matmul": np.matmul,
            "Negative": np.negative,
            "Absolute": np.abs,
            "Abs": np.abs,
            "Square": np.square,
            "Sqrt": np.sqrt,
            "Exp": np.exp,
            "Log": np.log,
            "Sin": np.sin,
            "Cos": np.cos,
            "Sign": np.sign,
            "Reciprocal": np.reciprocal,
            "Erf": scipy.special.erf,
            "GetItem": _get_item,
            "NotEqual": np.not_equal,
            "Equal": np.equal,
            "LogicalOr": np.logical_or,
            "LogicalAnd": np.logical_and,
            "LogicalNot": np.logical_not,
            "ZerosLike": np.zeros_like,
            "OnesLike": np.ones_like,
        }.items()
    },
    OPERATION_PREFIX + "Celu": _configured(_celu, "alpha"),
    OPERATION_PREFIX + "Squareplus": _configured(_squareplus, "b"),
    OPERATION_PREFIX + "Gelu": _configured(gelu, "approximate"),
    OPERATION_PREFIX + "Elu": _configured(elu, "alpha"),
    OPERATION_PREFIX + "LeakyRelu": _configured(leaky_relu, "negative_slope"),
    OPERATION_PREFIX + "Softmax": _configured(softmax, "axis"),
    OPERATION_PREFIX + "LogSoftmax": _configured(log_softmax, "axis"),
    OPERATION_PREFIX + "Clip": _configured(_clip, "x_min", "x_max"),
    OPERATION_PREFIX + "Mean": _configured(_reduce(np.mean), "axis", "keepdims"),
    OPERATION_PREFIX + "Sum": _configured(_reduce(np.sum), "axis", "keepdims"),
    OPERATION_PREFIX + "Max": _configured(_reduce(np.max), "axis", "keepdims", "initial"),
    OPERATION_PREFIX + "Min": _configured(_reduce(np.min), "axis", "keepdims", "initial"),
    OPERATION_PREFIX + "Any": _configured(_reduce(np.any), "axis", "keepdims"),
    OPERATION_PREFIX + "All": _configured(_reduce(np.all), "axis", "keepdims"),
    OPERATION_PREFIX + "Reshape": _configured(_reshape, "newshape"),
    OPERATION_PREFIX + "Transpose": _configured(np.transpose, "axes"),
    OPERATION_PREFIX + "ExpandDims": _configured(np.expand_dims, "axis"),
    OPERATION_PREFIX + "Squeeze": _configured(np.squeeze, "axis"),
    OPERATION_PREFIX + "Concatenate": _configured(np.concatenate, "axis"),
    OPERATION_PREFIX + "Stack": _configured(np.stack, "axis"),
    OPERATION_PREFIX + "Cast": _configured(_cast, "dtype"),
}
