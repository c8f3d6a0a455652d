"""A backend-neutral description of a Keras model: layers, configs, weights, wiring.

The numpy runners read this and never a Keras object, so our port depends only on
the layer configs and weights, as a hand re-implementation would. The wiring is
parsed from the model's Keras 3 config (the `inbound_nodes` of a Functional model,
the order of a Sequential one), the same data a TF.js topology is written from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.engine.errors import InvalidRequest

INPUT_LAYER = "InputLayer"
NESTED_MODEL_CLASSES = {"Functional", "Sequential", "Model"}


class ModelStructureError(InvalidRequest):
    """The model's wiring is something the engine cannot describe layer by layer."""


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
    def compute_layers(self) -> list[LayerSpec]:
        """The layers whose outputs are captured and compared (inputs excluded), in order."""
        return [layer for layer in self.layers if not layer.is_input]


def _history_names(args: Any) -> list[str]:
    """Layer names of every Keras tensor in a node's call arguments, in call order."""
    if isinstance(args, dict):
        if args.get("class_name") == "__keras_tensor__":
            return [args["config"]["keras_history"][0]]
        return [name for value in args.values() for name in _history_names(value)]
    if isinstance(args, list | tuple):
        return [name for item in args for name in _history_names(item)]
    return []


def _inbound_of(layer_config: dict[str, Any]) -> list[str]:
    nodes = layer_config.get("inbound_nodes", [])
    if len(nodes) > 1:
        raise ModelStructureError(
            f"layer {layer_config['name']!r} is called {len(nodes)} times; "
            "shared layers cannot be captured layer by layer"
        )
    if not nodes:
        return []
    return _history_names(nodes[0].get("args", []))


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


# Keras 3 serialises an operation on symbolic tensors as a node whose module is this.
KERAS_OPS_MODULE = "keras.src.ops"


def keras_operation_node(entry: dict[str, Any]) -> str | None:
    """Why a serialised graph node that is a keras.ops operation, not a layer, cannot be
    compared yet; None for a layer."""
    if not str(entry.get("module", "")).startswith(KERAS_OPS_MODULE):
        return None
    name = entry.get("config", {}).get("name", "?")
    return (
        f"{name!r} ({entry.get('class_name')}) is a keras.ops operation applied to "
        "tensors (such as x + 3.0), not a layer; driftbench compares layers only so far: "
        "express it with a layer (Add, Multiply, Activation, Rescaling)"
    )


def graph_from_keras(model: Any) -> ModelGraph:
    """Describe a loaded Keras 3 model (Sequential or Functional) as a `ModelGraph`."""
    config = model.get_config()
    layer_configs = config["layers"]
    for entry in layer_configs:
        if entry["class_name"] in NESTED_MODEL_CLASSES:
            raise ModelStructureError(
                f"layer {entry['config']['name']!r} is a nested {entry['class_name']} model; "
                "flatten it into one model to compare it layer by layer"
            )
        operation = keras_operation_node(entry)
        if operation:
            raise ModelStructureError(operation)
    sequential = "inbound_nodes" not in (layer_configs[0] if layer_configs else {})
    layers: list[LayerSpec] = []
    previous: str | None = None
    if sequential and (not layer_configs or layer_configs[0]["class_name"] != INPUT_LAYER):
        shape = config.get("build_input_shape") or list(model.inputs[0].shape)
        layers.append(_input_spec("input", list(shape), "float32"))
        previous = "input"
    for entry in layer_configs:
        layer_config = entry["config"]
        name = layer_config["name"]
        if entry["class_name"] == INPUT_LAYER:
            layers.append(_input_spec(name, layer_config["batch_shape"], layer_config["dtype"]))
            previous = name
            continue
        keras_layer = model.get_layer(name)
        inbound = [previous] if sequential else _inbound_of(entry)
        layers.append(
            LayerSpec(
                name=name,
                class_name=entry["class_name"],
                config=layer_config,
                weights=_layer_weights(keras_layer),
                inbound=[n for n in inbound if n is not None],
                output_shape=tuple(keras_layer.output.shape),
            )
        )
        previous = name
    outputs = [layers[-1].name] if sequential else _names_of_refs(config["output_layers"])
    return ModelGraph(name=config.get("name", "model"), layers=layers, outputs=outputs)


def _layer_weights(keras_layer: Any) -> dict[str, np.ndarray]:
    """A layer's variables by name. A Bidirectional layer holds two cells whose variables
    share their names: keyed 'forward/<name>' and 'backward/<name>'."""
    if hasattr(keras_layer, "forward_layer") and hasattr(keras_layer, "backward_layer"):
        return {
            f"{side}/{w.name}": np.asarray(w.numpy())
            for side, inner in (
                ("forward", keras_layer.forward_layer),
                ("backward", keras_layer.backward_layer),
            )
            for w in inner.weights
        }
    return {w.name: np.asarray(w.numpy()) for w in keras_layer.weights}


def _names_of_refs(refs: list[Any]) -> list[str]:
    """`output_layers` is either one ["name", node, tensor] triple or a list of them."""
    if refs and isinstance(refs[0], str):
        return [refs[0]]
    return [ref[0] for ref in refs]
