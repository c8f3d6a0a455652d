"""A backend-neutral description of a Keras model: layers, configs, weights, wiring.

The numpy runners read this and never a Keras object, so our port depends only on
the layer configs and weights, as a hand re-implementation would. One spec per
node of the unrolled model (`workers.engine.unroll`): a nested layer under its
path, a repeated call as `name@k`, a keras.ops operation as class `ops.<Name>`
with its recorded arguments; the TF.js topology is written from the same list.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.engine.unroll import KerasNode, unroll

INPUT_LAYER = "InputLayer"


@dataclass(frozen=True)
class LayerSpec:
    name: str
    class_name: str
    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    inbound: list[str]
    output_shape: tuple[int | None, ...]

    @property
    def param_count(self) -> int:
        return int(sum(w.size for w in self.weights.values()))

    @property
    def is_input(self) -> bool:
        return self.class_name == INPUT_LAYER


@dataclass(frozen=True)
class ModelGraph:
    name: str
    layers: list[LayerSpec]
    outputs: list[str]
    _by_name: dict[str, LayerSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {layer.name: layer for layer in self.layers})

    def layer(self, name: str) -> LayerSpec:
        return self._by_name[name]

    @property
    def inputs(self) -> list[LayerSpec]:
        return [layer for layer in self.layers if layer.is_input]

    @property
    def input_shapes(self) -> dict[str, tuple[int | None, ...]]:
        return {layer.name: layer.output_shape for layer in self.inputs}

    @property
    def input_dtypes(self) -> dict[str, str]:
        return {layer.name: layer.config["dtype"] for layer in self.inputs}

    @property
    def compute_layers(self) -> list[LayerSpec]:
        """The layers whose outputs are captured and compared (inputs excluded), in order."""
        return [layer for layer in self.layers if not layer.is_input]


def _input_spec(name: str, batch_shape: list[int | None], dtype: str) -> LayerSpec:
    return LayerSpec(
        name=name,
        class_name=INPUT_LAYER,
        config={"name": name, "batch_shape": list(batch_shape), "dtype": dtype},
        weights={},
        inbound=[],
        output_shape=tuple(batch_shape),
    )


def architecture_signature(graph: ModelGraph) -> tuple[str, str]:
    """A short hash and a readable label of the layer stack, ignoring names and weights.

    Models with the same classes, output shapes and activations in the same order
    (say, every ten-layer Dense(50) stack) share a signature, so their drift can be
    aggregated per depth.
    """
    parts = [
        (layer.class_name, [d for d in layer.output_shape[1:]], layer.config.get("activation"))
        for layer in graph.layers
    ]
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]
    labels: list[str] = []
    counts: list[int] = []
    for class_name, shape, _ in parts:
        label = f"{class_name}({', '.join(str(d) for d in shape)})"
        if labels and labels[-1] == label:
            counts[-1] += 1
        else:
            labels.append(label)
            counts.append(1)
    text = " → ".join(
        f"{label} x{n}" if n > 1 else label for label, n in zip(labels, counts, strict=True)
    )
    return digest, text


def graph_from_summary(name: str, layers: list[dict[str, Any]]) -> ModelGraph:
    """A weightless graph from stored layer summaries: enough to name and order layers."""
    return ModelGraph(
        name=name,
        layers=[
            LayerSpec(
                name=layer["name"],
                class_name=layer["class_name"],
                config={},
                weights={},
                inbound=layer.get("inbound", []),
                output_shape=tuple(layer["output_shape"]),
            )
            for layer in layers
        ],
        outputs=[],
    )


OPERATION_PREFIX = "ops."


def _call_template(node: KerasNode) -> dict[str, Any]:
    """The operation's recorded arguments with each tensor replaced by {"input": i}, the
    index of its inbound node: constants (`x * 0.5`), axes and slices stay as given.
    `masked` lists the inputs that carry a Keras mask, which some layers (attention)
    apply without the graph recording it as an argument."""
    index = {id(t): i for i, t in reversed(list(enumerate(node.call.input_tensors)))}

    def template(value: Any) -> Any:
        if id(value) in index:
            return {"input": index[id(value)]}
        if isinstance(value, list | tuple):
            return [template(item) for item in value]
        if isinstance(value, dict):
            return {key: template(item) for key, item in value.items()}
        return value

    arguments = node.call.arguments
    return {
        "args": template(list(arguments.args)),
        "kwargs": template(dict(arguments.kwargs)),
        "input_shapes": [list(t.shape) for t in node.call.input_tensors],
        "masked": [
            i
            for i, t in enumerate(node.call.input_tensors)
            if getattr(t, "_keras_mask", None) is not None
        ],
    }


def _spec(node: KerasNode) -> LayerSpec:
    if node.is_input:
        return _input_spec(node.name, list(node.output_shape), node.dtype)
    operation = node.operation
    prefix = "" if node.is_layer else OPERATION_PREFIX
    class_name = prefix + type(operation).__name__
    config = {**operation.get_config(), "call": _call_template(node)}
    return LayerSpec(
        name=node.name,
        class_name=class_name,
        config=config,
        weights=_layer_weights(operation) if node.is_layer else {},
        inbound=node.inbound,
        output_shape=node.output_shape,
    )


def graph_from_keras(model: Any) -> ModelGraph:
    """Describe a loaded Keras 3 model, nested models and repeated calls unrolled (see
    `workers.engine.unroll`), as a `ModelGraph`."""
    nodes, outputs = unroll(model)
    return ModelGraph(name=model.name, layers=[_spec(node) for node in nodes], outputs=outputs)


def _layer_weights(keras_layer: Any) -> dict[str, np.ndarray]:
    """A layer's variables by name. A Bidirectional layer holds two cells whose variables
    share their names: keyed 'forward/<name>' and 'backward/<name>'; any other layer whose
    variables share names (MultiHeadAttention's four sublayers) by path within the layer,
    'query/kernel'."""
    if hasattr(keras_layer, "forward_layer") and hasattr(keras_layer, "backward_layer"):
        return {
            f"{side}/{w.name}": np.asarray(w.numpy())
            for side, inner in (
                ("forward", keras_layer.forward_layer),
                ("backward", keras_layer.backward_layer),
            )
            for w in inner.weights
        }
    weights = keras_layer.weights
    if len({w.name for w in weights}) == len(weights):
        return {w.name: np.asarray(w.numpy()) for w in weights}
    return {w.path.removeprefix(f"{keras_layer.path}/"): np.asarray(w.numpy()) for w in weights}
