"""A model's weights as a port needs them: every array in Keras's own layout, keyed
'<layer>/<weight>', with the layout spelled out.

Most port bugs are layout bugs (a Conv2D kernel read as PyTorch's OIHW, a Dense
kernel used as (out, in), LSTM gates in another order), so each weight says which
axis is which instead of leaving the reader to guess from the shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.engine.graph import ModelGraph

# '<layer>@k' is the k-th call of one layer: its weights are the layer's, listed once.
CALL_SUFFIX = re.compile(r"@\d+$")
CONVOLUTIONS = {"Conv1D": "W", "Conv2D": "HW", "Conv3D": "DHW"}
TRANSPOSED = {"Conv1DTranspose": "W", "Conv2DTranspose": "HW", "Conv3DTranspose": "DHW"}
WRAPPERS = {"Bidirectional", "TimeDistributed"}
GATES = {
    "LSTM": "input, forget, cell, output",
    "GRU": "update (z), reset (r), candidate (h)",
    "SimpleRNN": "",
}


@dataclass(frozen=True)
class Weight:
    layer: str
    class_name: str
    name: str
    value: np.ndarray
    # The class whose layout the array has: a wrapper's (Bidirectional, TimeDistributed)
    # wrapped layer.
    layout_class: str

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "layer": self.layer,
            "class_name": self.class_name,
            "weight": self.name,
            "shape": list(self.value.shape),
            "dtype": str(self.value.dtype),
            "layout": weight_layout(self.layout_class, self.name, self.value.shape),
        }


def _spatial(axes: str) -> str:
    names = {"D": "depth", "H": "height", "W": "width"}
    return ", ".join(f"kernel_{names[a]}" for a in axes)


def _recurrent(class_name: str, name: str, shape: tuple[int, ...]) -> str | None:
    gates = GATES[class_name]
    order = f"; gates concatenated on the last axis in the order {gates}" if gates else ""
    if name == "kernel":
        return f"(input_features, {'gates x ' if gates else ''}units){order}"
    if name == "recurrent_kernel":
        return f"(units, {'gates x ' if gates else ''}units){order}"
    if name == "bias" and len(shape) == 2:
        return f"(2, gates x units): row 0 the input bias, row 1 the recurrent bias{order}"
    if name == "bias":
        return f"({'gates x ' if gates else ''}units){order}"
    return None


def weight_layout(class_name: str, name: str, shape: tuple[int, ...]) -> str:
    """Which axis of the array is which, in words; the shape alone for weights with no
    layout to get wrong. A Bidirectional's 'forward/kernel' is laid out as 'kernel'."""
    name = name.removeprefix("forward/").removeprefix("backward/")
    if class_name in CONVOLUTIONS and name == "kernel":
        axes = CONVOLUTIONS[class_name]
        return f"{axes}IO: ({_spatial(axes)}, in_channels / groups, out_channels)"
    if class_name in TRANSPOSED and name == "kernel":
        axes = TRANSPOSED[class_name]
        return f"{axes}OI: ({_spatial(axes)}, out_channels, in_channels)"
    if class_name in ("DepthwiseConv2D", "SeparableConv2D") and name in (
        "kernel",
        "depthwise_kernel",
    ):
        return "HWCM: (kernel_height, kernel_width, in_channels, depth_multiplier)"
    if class_name == "SeparableConv2D" and name == "pointwise_kernel":
        return "HWIO: (1, 1, in_channels x depth_multiplier, out_channels)"
    if class_name == "Dense" and name == "kernel":
        return "(in_features, out_features): y = x @ kernel + bias"
    if class_name == "Embedding" and name == "embeddings":
        return "(vocabulary, output_dim): row i is token i's vector"
    if class_name in GATES:
        described = _recurrent(class_name, name, shape)
        if described is not None:
            return described
    return f"shape {tuple(shape)}"


def model_weights(graph: ModelGraph) -> list[Weight]:
    """Every weight of every layer once, in graph order; a Bidirectional's as
    'forward/...' and 'backward/...' of its layer."""
    weights: list[Weight] = []
    seen: set[str] = set()
    for layer in graph.compute_layers:
        owner = CALL_SUFFIX.sub("", layer.name)
        if owner in seen:
            continue
        seen.add(owner)
        wrapped = layer.config.get("layer") if layer.class_name in WRAPPERS else None
        layout_class = wrapped["class_name"] if wrapped else layer.class_name
        for name, value in layer.weights.items():
            weights.append(Weight(owner, layer.class_name, name, np.asarray(value), layout_class))
    return weights
