"""A loaded Keras model walked call by call into one flat list of nodes.

Users ship models that nest models (a classifier on a `MobileNetV2(include_top=False)`),
call one layer more than once, and apply `keras.ops` to tensors between layers
(`x + 3.0` in MobileNetV3). Each of those calls has its own output, and drift can
start in any of them, so every call becomes one node: nested layers are named by
their path (`mobilenetv2_1.00_64/Conv1`), a layer called n > 1 times gets one node
per call (`dense@1`, `dense@2`), and an operation is a node like a layer (one Keras
adds itself, such as a mask's `not_equal`, is named by kind and rank: `not_equal#1`).

The walk reads Keras's own call graph (each operation's nodes and the arguments it
was called with) rather than re-parsing the saved config, so the same list drives
the graph description, the keras-cpu capture model (every node replayed on fresh
inputs, the same layer objects and weights) and the isolated per-node calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from workers.engine.errors import InvalidRequest

NESTED_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})


class ModelStructureError(InvalidRequest):
    """The model's wiring is something the engine cannot describe node by node."""


@dataclass(frozen=True)
class KerasNode:
    """One call in the unrolled model: `operation(*args)` as Keras recorded it, with the
    names of the nodes whose outputs feed its tensor arguments, in argument order."""

    name: str
    operation: Any
    call: Any
    inbound: list[str]
    output_shape: tuple[int | None, ...]
    dtype: str

    @property
    def is_input(self) -> bool:
        return self.call is None

    @property
    def is_layer(self) -> bool:
        """A layer (weights, a config) rather than a keras.ops operation."""
        return hasattr(self.operation, "weights")

    def replay(self, tensors: list[Any]) -> Any:
        """Call the operation again on `tensors` (one per inbound name), symbolic or eager,
        with every other argument as recorded (constants, `axis=`, ...)."""
        by_id = {id(t): value for t, value in zip(self.call.input_tensors, tensors, strict=True)}
        args, kwargs = self.call.arguments.fill_in(by_id)
        kwargs.pop("training", None)
        return self.operation(*args, **kwargs)


def _is_model(operation: Any) -> bool:
    return type(operation).__name__ in NESTED_MODEL_CLASSES or hasattr(operation, "_functional")


def _functional_of(model: Any) -> Any:
    """The Functional graph a Sequential model builds for itself, or the model itself."""
    if type(model).__name__ == "Sequential":
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ModelStructureError(
                f"Sequential model {model.name!r} has no input shape; "
                "give it a keras.Input so its layers have shapes"
            )
        return functional
    return model


def _declared_names(model: Any) -> frozenset[str]:
    """The operations a model's saved config names: its layers, and for a Functional model
    the keras.ops nodes written by the user. Keras also adds operations of its own when it
    builds the graph (the NotEqual and Any that compute a Masking layer's mask); those take
    names from a process-wide counter, different at every load."""
    if type(model).__name__ == "Sequential":
        return frozenset(layer.name for layer in model.layers)
    return frozenset(entry["config"]["name"] for entry in model.get_config()["layers"])


def _own_nodes(function: Any) -> list[Any]:
    """The function's nodes in an order where every node follows what feeds it."""
    by_depth = function._nodes_by_depth
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _call_names(nodes: list[Any], declared: frozenset[str]) -> dict[int, str]:
    """'name' for an operation called once in this function, 'name@k' (k from 1, in
    Keras's own call order) for each call of one called more than once; an operation
    Keras added is named by its kind and rank in the graph ('not_equal#1'), the same at
    every load."""
    mine = {id(node) for node in nodes}
    names: dict[int, str] = {}
    added: dict[str, int] = {}
    for node in nodes:
        operation = node.operation
        if operation.name not in declared:
            kind = re.sub(r"_\d+$", "", operation.name)
            added[kind] = added.get(kind, 0) + 1
            names[id(node)] = f"{kind}#{added[kind]}"
            continue
        calls = [n for n in operation._inbound_nodes if id(n) in mine]
        if len(calls) == 1:
            names[id(node)] = operation.name
        else:
            index = next(i for i, n in enumerate(calls, start=1) if n is node)
            names[id(node)] = f"{operation.name}@{index}"
    return names


def _walk(model: Any, inputs: list[str], prefix: str) -> Iterator[KerasNode | list[str]]:
    """Yield the model's nodes (nested models expanded in place), then, last, the names of
    the nodes that produce its outputs."""
    function = _functional_of(model)
    produced = dict(zip((id(t) for t in function.inputs), inputs, strict=True))
    nodes = [node for node in _own_nodes(function) if not node.is_input]
    names = _call_names(nodes, _declared_names(model))
    for node in nodes:
        inbound = [produced[id(t)] for t in node.input_tensors]
        name = prefix + names[id(node)]
        if len(node.outputs) != 1:
            raise ModelStructureError(
                f"{name!r} ({type(node.operation).__name__}) returns {len(node.outputs)} "
                "tensors; driftbench compares one output per layer (return_state and "
                "multi-output operations are not supported)"
            )
        if _is_model(node.operation):
            inner = _functional_of(node.operation)
            if len(inner.inputs) != len(inbound):
                raise ModelStructureError(
                    f"nested model {name!r} is called with {len(inbound)} tensors "
                    f"but has {len(inner.inputs)} inputs"
                )
            *inner_nodes, outputs = _walk(node.operation, inbound, f"{name}/")
            yield from inner_nodes
            produced[id(node.outputs[0])] = outputs[0]
            continue
        output = node.outputs[0]
        yield KerasNode(
            name=name,
            operation=node.operation,
            call=node,
            inbound=inbound,
            output_shape=tuple(output.shape),
            dtype=str(output.dtype),
        )
        produced[id(output)] = name
    yield [produced[id(t)] for t in function.outputs]


def unroll(model: Any) -> tuple[list[KerasNode], list[str]]:
    """The model's input nodes then every call in dependency order, and its output names."""
    function = _functional_of(model)
    inputs = [
        KerasNode(
            name=tensor._keras_history.operation.name,
            operation=tensor._keras_history.operation,
            call=None,
            inbound=[],
            output_shape=tuple(tensor.shape),
            dtype=str(tensor.dtype),
        )
        for tensor in function.inputs
    ]
    *nodes, outputs = _walk(model, [node.name for node in inputs], "")
    return [*inputs, *nodes], outputs


@dataclass(frozen=True)
class KerasCapture:
    """Every node of a model replayed on fresh inputs into one model with one output per
    node: one `predict` captures them all from the graph a user's `model.predict` runs
    (the same layer objects and weights), and `call` runs one node alone."""

    model: Any
    names: list[str]
    nodes: dict[str, KerasNode]

    def call(self, name: str, tensors: list[Any]) -> Any:
        return self.nodes[name].replay(tensors)


def capture_model(keras: Any, model: Any) -> KerasCapture:
    """Replayed on symbolic inputs rather than built from the model's own tensors: a
    nested layer's output or a shared layer's second call is no tensor of the outer
    model, but a node of the replay."""
    nodes, _ = unroll(model)
    values: dict[str, Any] = {}
    inputs = []
    for node in nodes:
        if node.is_input:
            values[node.name] = keras.Input(
                batch_shape=node.output_shape, dtype=node.dtype, name=node.name
            )
            inputs.append(values[node.name])
        else:
            values[node.name] = node.replay([values[name] for name in node.inbound])
    computed = [node for node in nodes if not node.is_input]
    return KerasCapture(
        model=keras.Model(inputs, [values[node.name] for node in computed]),
        names=[node.name for node in computed],
        nodes={node.name: node for node in computed},
    )
