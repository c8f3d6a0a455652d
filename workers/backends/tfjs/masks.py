"""Keras masks in the TF.js export: left to TF.js's own layers, which compute them too.

Keras 3 writes the mask an Embedding(mask_zero=True) or a Masking layer makes as
operation nodes of the graph (`not_equal`, `any`) passed to the consumers as their
`mask` argument. TF.js's layers-model has no such nodes: its Embedding and Masking
attach the same mask to their output and the recurrent layers take it from there.
The export therefore drops those nodes and the consumers' mask inputs, and the TF.js
backends report the mask nodes as not provided. A mask computed any other way
(`lstm(x, mask=ops.not_equal(t, 5))`) has no TF.js form and is refused rather than
dropped: dropping it would change what the consumer computes.
"""

from __future__ import annotations

from typing import Any

from workers.engine.graph import OPERATION_PREFIX, LayerSpec, ModelGraph

NOT_EQUAL = OPERATION_PREFIX + "NotEqual"
ANY = OPERATION_PREFIX + "Any"


def mask_input(layer: LayerSpec) -> int | None:
    """The index in `layer.inbound` of the mask Keras passed to its call, or None."""
    call = layer.config.get("call") or {}
    mask = call.get("kwargs", {}).get("mask")
    if isinstance(mask, dict) and set(mask) == {"input"}:
        return int(mask["input"])
    return None


def _compares_with(node: LayerSpec, value: Any) -> bool:
    """`ops.not_equal(x, value)`: the first argument the tensor, the second the number."""
    args = node.config["call"]["args"]
    return (
        node.class_name == NOT_EQUAL
        and len(args) == 2
        and args[0] == {"input": 0}
        and isinstance(args[1], int | float)
        and float(args[1]) == float(value)
    )


def _keras_mask_of(graph: ModelGraph, node: LayerSpec) -> bool:
    """Whether `node` computes the mask an Embedding(mask_zero) or a Masking layer of the
    graph puts on its output: the mask TF.js's own layer computes."""
    if node.class_name == NOT_EQUAL:
        (tokens,) = node.inbound
        return any(
            layer.class_name == "Embedding"
            and layer.config.get("mask_zero")
            and layer.inbound == [tokens]
            and _compares_with(node, 0)
            for layer in graph.layers
        )
    if node.class_name == ANY and node.config.get("axis") in (-1, [-1]):
        (source,) = node.inbound
        compared = graph.layer(source)
        if compared.class_name != NOT_EQUAL or node.config.get("keepdims"):
            return False
        (values,) = compared.inbound
        return any(
            layer.class_name == "Masking"
            and layer.inbound == [values]
            and _compares_with(compared, layer.config.get("mask_value", 0.0))
            for layer in graph.layers
        )
    return False


def _mask_only(graph: ModelGraph) -> set[str]:
    """Operation nodes whose output is used only as a mask, or only to compute one."""
    uses: dict[str, list[tuple[LayerSpec, int]]] = {layer.name: [] for layer in graph.layers}
    for layer in graph.layers:
        for index, name in enumerate(layer.inbound):
            uses[name].append((layer, index))
    only: set[str] = set()
    for layer in reversed(graph.layers):
        used = uses[layer.name]
        if (
            layer.class_name.startswith(OPERATION_PREFIX)
            and used
            and layer.name not in graph.outputs
            and all(mask_input(user) == i or user.name in only for user, i in used)
        ):
            only.add(layer.name)
    return only


def tfjs_masks(graph: ModelGraph) -> frozenset[str]:
    """The nodes the TF.js export leaves out: those computing the masks TF.js computes
    itself (empty when a mask cannot be left to TF.js; `mask_problem` says why)."""
    if mask_problem(graph) is not None:
        return frozenset()
    return frozenset(_mask_only(graph))


def mask_problem(graph: ModelGraph) -> str | None:
    """'unsupported: ...' for the first layer called with a mask TF.js cannot compute."""
    only = _mask_only(graph)
    for layer in graph.compute_layers:
        index = mask_input(layer)
        if index is None:
            continue
        source = graph.layer(layer.inbound[index])
        if source.name not in only or not _keras_mask_of(graph, source):
            return (
                f"unsupported: {layer.name} ({layer.class_name}) takes a mask computed by "
                f"{source.name} ({source.class_name}); TF.js layers take masks only from "
                "Embedding(mask_zero=True) and Masking"
            )
    return None
