"""keras.ops operation nodes exported as the TF.js layer that computes the same.

The TF.js layers format has no operation nodes, but most operations people put
between layers are a layer TF.js has: `x + 3.0` and `x * (1/6)` (MobileNetV3's
hard-swish) are a Rescaling, `ops.tanh(a)` an Activation, `a + b` an Add; `x / c`
becomes x * (1/c), equal within rounding. What has no TF.js layer (`2.0 - x` is
fine, `a - b` is not: TF.js has no Subtract) is refused for the TF.js backends with
the reason. `ops.hard_sigmoid` maps to TF.js's hard_sigmoid like the Activation
layer does, so TF.js's other definition of it (0.2x + 0.5) is reported as drift.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from workers.engine.graph import OPERATION_PREFIX, LayerSpec

# Operations on two tensors that a TF.js merge layer computes.
MERGES = {"Add": "Add", "Multiply": "Multiply", "Maximum": "Maximum", "Minimum": "Minimum"}
# Operations on one tensor that a TF.js activation computes; the value is its TF.js name.
ACTIVATIONS = {
    "Relu": "relu",
    "Relu6": "relu6",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Softplus": "softplus",
    "Softsign": "softsign",
    "Silu": "swish",
    "Selu": "selu",
    "Mish": "mish",
    "HardSigmoid": "hard_sigmoid",
}
AFFINE = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Negative"}
UNARY = {*ACTIVATIONS, "Gelu", "Softmax", "Transpose", "Reshape"}


def _tensor(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"input"}


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _affine(operation: str, args: list[Any]) -> tuple[float, float] | None:
    """(scale, offset) such that the operation is x * scale + offset, for one tensor and
    at most one number: what TF.js's Rescaling layer computes."""
    if operation == "Negative" and len(args) == 1 and _tensor(args[0]):
        return -1.0, 0.0
    if len(args) != 2 or sum(_tensor(a) for a in args) != 1 or not any(map(_number, args)):
        return None
    constant = float(next(a for a in args if _number(a)))
    tensor_first = _tensor(args[0])
    if operation == "Add":
        return 1.0, constant
    if operation == "Multiply":
        return constant, 0.0
    if operation == "Subtract":
        return (1.0, -constant) if tensor_first else (-1.0, constant)
    if tensor_first and operation in {"Divide", "TrueDivide"} and constant != 0:
        return 1.0 / constant, 0.0
    return None


def _keeps_batch(config: dict[str, Any]) -> bool:
    """A reshape to (-1, *rest) that keeps each sample's size reshapes each sample, as
    TF.js's Reshape does; otherwise -1 folds the batch into another axis."""
    newshape = list(config["newshape"])
    (input_shape,) = config["call"]["input_shapes"]
    rest = newshape[1:]
    return (
        newshape[0] in (-1, None)
        and -1 not in rest
        and None not in input_shape[1:]
        and math.prod(rest) == math.prod(input_shape[1:])
    )


def _translate(layer: LayerSpec) -> tuple[str, dict[str, Any]] | str:
    """The TF.js class and config, or why there is none."""
    operation = layer.class_name.removeprefix(OPERATION_PREFIX)
    config = layer.config
    args = config["call"]["args"]
    if config["call"]["kwargs"]:
        return f"keyword arguments {sorted(config['call']['kwargs'])}"
    if operation == "Concatenate" and len(args) == 1 and all(map(_tensor, args[0])):
        return "Concatenate", {"axis": config.get("axis", -1)}
    tensors = sum(_tensor(a) for a in args)
    if operation in MERGES and len(args) == 2 and tensors == 2:
        return MERGES[operation], {}
    if operation in AFFINE:
        affine = _affine(operation, args)
        if affine is None:
            return "only a tensor and a number (x + c, c - x, x * c, x / c) have a TF.js layer"
        return "Rescaling", {"scale": affine[0], "offset": affine[1]}
    if operation not in UNARY:
        return "no TF.js layer computes it"
    if len(args) != 1 or not _tensor(args[0]):
        return "only the form with one tensor argument has a TF.js layer"
    if operation in ACTIVATIONS:
        return "Activation", {"activation": ACTIVATIONS[operation]}
    if operation == "Gelu":
        if config.get("approximate", True):
            return (
                "approximate=True (TF.js registers its tanh form as 'gelu_new', a name its "
                "loader cannot read back)"
            )
        return "Activation", {"activation": "gelu"}
    if operation == "Softmax" and config.get("axis", -1) == -1:
        return "Activation", {"activation": "softmax"}
    if operation == "Transpose" and config.get("axes") and config["axes"][0] == 0:
        return "Permute", {"dims": list(config["axes"][1:])}
    if operation == "Reshape" and _keeps_batch(config):
        return "Reshape", {"target_shape": list(config["newshape"][1:])}
    return "no TF.js layer computes it"


def operation_problem(layer: LayerSpec) -> str | None:
    translated = _translate(layer)
    return translated if isinstance(translated, str) else None


def operation_layer(layer: LayerSpec) -> tuple[str, dict[str, Any]]:
    """The TF.js class name and the options of its config that compute this operation."""
    translated = _translate(layer)
    if isinstance(translated, str):
        raise ValueError(f"{layer.name}: {translated}")
    return translated
