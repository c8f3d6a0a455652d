"""Our own Keras 3 → TF.js "layers-model" exporter, written from a `ModelGraph`.

The `tensorflowjs` pip converter cannot be used with Keras 3 (it downgrades
TensorFlow, and its output for Keras 3 models does not load in TF.js 4.22), so we
write the Keras-2-style topology TF.js reads ourselves: a functional "Model" with
`[[name, 0, 0, {}]]` inbound nodes, `batch_input_shape` inputs, plain "float32"
dtypes, and one weights file named `<layer>/<weight>` as TF.js expects. Configs are
translated key by key; a layer TF.js lacks, or an option it would silently
ignore, is refused for the TF.js backends only.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from workers.backends.base import unsupported_label
from workers.backends.numpy.activations import UnknownActivation, activation_name
from workers.backends.numpy.layers import (
    NORMALIZATION_EPSILON,
    LayerConfigUnsupported,
    normalization_statistics,
)
from workers.backends.tfjs.masks import mask_input, mask_problem, tfjs_masks
from workers.backends.tfjs.operations import operation_layer, operation_problem
from workers.engine.graph import OPERATION_PREFIX, LayerSpec, ModelGraph

TFJS_LAYERS = frozenset(
    {
        "InputLayer",
        "Dense",
        "Activation",
        "ReLU",
        "LeakyReLU",
        "ELU",
        "Softmax",
        "PReLU",
        "Dropout",
        "SpatialDropout1D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "Flatten",
        "Reshape",
        "Permute",
        "Conv1D",
        "Conv2D",
        "DepthwiseConv2D",
        "SeparableConv2D",
        "Conv2DTranspose",
        "MaxPooling1D",
        "MaxPooling2D",
        "AveragePooling1D",
        "AveragePooling2D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "BatchNormalization",
        "LayerNormalization",
        "ZeroPadding2D",
        "Cropping2D",
        "UpSampling2D",
        "Add",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
        "Concatenate",
        "Dot",
        "Conv3D",
        "Conv3DTranspose",
        "MaxPooling3D",
        "AveragePooling3D",
        "RepeatVector",
        "TimeDistributed",
        "Rescaling",
        "Normalization",
        "Embedding",
        "Masking",
        "LayerScale",
        "SimpleRNN",
        "LSTM",
        "GRU",
        "Bidirectional",
    }
)
# Layers tfjs-layers 4.22 has that fail in a loaded layers-model (seen here), or that
# driftbench does not export.
TFJS_BROKEN = {
    "CenterCrop": "(tfjs-layers 4.22's CenterCrop takes its output shape for the model's "
    "input shape: 'expected y to have shape [null,4,4,3] but got [2,6,8,3]')",
    "MultiHeadAttention": "(tfjs-layers 4.22's MultiHeadAttention belongs to its nlp "
    "models; driftbench does not export it)",
    "Resizing": "(tfjs-layers 4.22's Resizing fails in a loaded model, 'x must be rank 3 or "
    "4, but got rank 1', and would resize with align_corners, not Keras's half-pixel "
    "centres)",
}
RECURRENT = {"SimpleRNN", "LSTM", "GRU"}
BIDIRECTIONAL_MERGES = {"concat", "sum", "mul", "ave"}
# Keras 3 activation name -> the TF.js class that computes it (TF.js camel-cases names).
TFJS_ACTIVATIONS = {
    name: name
    for name in (
        "linear",
        "relu",
        "relu6",
        "elu",
        "selu",
        "sigmoid",
        "hard_sigmoid",
        "softplus",
        "softsign",
        "tanh",
        "softmax",
        "log_softmax",
        "gelu",
        "mish",
        "swish",
    )
} | {"silu": "swish"}
# Keras 3's hard-swish names; TF.js has no such activation (see _as_hard_silu).
HARD_SILU = frozenset({"hard_silu", "hard_swish"})
# Characters a TF.js layer name may hold: its weights are looked up as '<layer>/<weight>',
# so a nested node's path ('outer/conv') or a repeated call ('dense@2') is renamed; TF.js
# also wants the first character alphanumeric.
TFJS_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# Keras 3 renamed a few weights; TF.js keeps the Keras 2 names.
TFJS_WEIGHT_NAMES = {"DepthwiseConv2D": {"kernel": "depthwise_kernel"}}
DROPPED_KEYS = {
    "call",
    "dtype",
    "quantization_config",
    "lora_rank",
    "lora_alpha",
    "synchronized",
    "autocast",
    "rms_scaling",
    "groups",
    "output_padding",
    "keepdims",
    "seed",
}
GLOBAL_POOLING = {
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
}


def _config_problem(layer: LayerSpec) -> str | None:
    """Why TF.js cannot compute this layer as Keras does, or None."""
    config = layer.config
    if _is_hard_silu(layer):
        return None
    if layer.class_name.startswith(OPERATION_PREFIX):
        return operation_problem(layer)
    if layer.class_name in TFJS_BROKEN:
        return TFJS_BROKEN[layer.class_name]
    if layer.class_name not in TFJS_LAYERS:
        return "(tfjs-layers 4.22 has no such layer)"
    for key in ("activation", "recurrent_activation"):
        if key in config:
            try:
                name = activation_name(config[key])
            except UnknownActivation:
                name = repr(config[key])
            if name not in TFJS_ACTIVATIONS:
                return f"{key} {name!r}"
    if layer.class_name == "Bidirectional":
        return _bidirectional_problem(layer)
    if layer.class_name in RECURRENT:
        for option in ("return_state", "stateful"):
            if config.get(option):
                return f"{option}=True"
        if layer.class_name == "GRU" and config.get("reset_after", True):
            return "reset_after=True (TF.js's GRU has only the Keras 1 form, reset_after=False)"
    if int(config.get("groups", 1)) != 1 and not _is_depthwise(layer):
        return f"groups={config['groups']} (TF.js convolutions are ungrouped or depthwise)"
    if layer.class_name == "ReLU" and config.get("negative_slope"):
        return "negative_slope (TF.js's ReLU has none)"
    if _is_thresholded(layer) and config.get("max_value") is not None:
        return "threshold with max_value (TF.js's ThresholdedReLU has no maximum)"
    if layer.class_name == "TimeDistributed":
        inner = replace(_wrapped(layer, "layer"), weights=layer.weights)
        problem = _config_problem(inner)
        if problem is not None:
            return f"wrapped {inner.class_name} {problem}".rstrip()
        if _rewritten(inner):
            return f"wrapped {inner.class_name}: TF.js's TimeDistributed takes a layer as it is"
    if layer.class_name == "Conv2DTranspose":
        if any(d != 1 for d in np.atleast_1d(config.get("dilation_rate", 1))):
            return f"dilation_rate {config['dilation_rate']}"
        if config.get("output_padding") is not None:
            return f"output_padding {config['output_padding']}"
    if (
        layer.class_name in GLOBAL_POOLING
        and config.get("keepdims")
        and config.get("data_format") == "channels_first"
    ):
        return "keepdims=True with channels_first"
    if layer.class_name == "LayerNormalization" and config.get("rms_scaling"):
        return "rms_scaling=True"
    if layer.class_name == "Rescaling" and any(
        np.ndim(config.get(key, 0.0)) for key in ("scale", "offset")
    ):
        return "per-channel scale or offset (TF.js Rescaling takes numbers)"
    if layer.class_name == "Normalization":
        problem = _normalization_problem(layer)
        if problem:
            return problem
    if (
        layer.class_name == "Softmax"
        and isinstance(config.get("axis"), list)
        and len(config["axis"]) > 1
    ):
        return f"axis {config['axis']}"
    return None


def unsupported_reason(layer: LayerSpec) -> str | None:
    """'unsupported: <layer> (<class>)[ detail]' when TF.js cannot run the layer."""
    problem = _config_problem(layer)
    if problem is None:
        return None
    detail = f" {problem}" if problem else ""
    return f"{unsupported_label(layer)}{detail}"


def _wrapped(layer: LayerSpec, key: str) -> LayerSpec:
    """The layer a wrapper holds: a Bidirectional's (key 'layer' or 'backward_layer'), a
    TimeDistributed's ('layer')."""
    inner = layer.config[key]
    return LayerSpec(
        name=inner["config"]["name"],
        class_name=inner["class_name"],
        config=inner["config"],
        weights={},
        inbound=[],
        output_shape=(),
    )


def _bidirectional_problem(layer: LayerSpec) -> str | None:
    """TF.js's Bidirectional builds its backward layer itself, as the forward one reversed:
    a model whose backward layer is anything else cannot be expressed."""
    merge = layer.config.get("merge_mode", "concat")
    if merge not in BIDIRECTIONAL_MERGES:
        return f"merge_mode {merge!r}"
    forward = _wrapped(layer, "layer")
    if forward.class_name not in RECURRENT:
        return f"wrapped layer {forward.class_name}"
    problem = _config_problem(forward)
    if problem:
        return f"wrapped {forward.class_name}: {problem}"
    if "backward_layer" in layer.config:
        backward = _wrapped(layer, "backward_layer")
        ignored = {"name", "go_backwards"}
        mirrored = backward.class_name == forward.class_name and {
            k: v for k, v in backward.config.items() if k not in ignored
        } == {k: v for k, v in forward.config.items() if k not in ignored}
        if not mirrored or backward.config.get("go_backwards") == forward.config.get(
            "go_backwards"
        ):
            return "a backward_layer that is not the forward layer reversed"
    return None


def _as_bidirectional(layer: LayerSpec) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """TF.js's Bidirectional rebuilds both copies from the forward layer's config and names
    them forward_<layer> and backward_<layer>; the weights follow those names."""
    forward = _wrapped(layer, "layer")
    config = {
        **_frozen(layer.name),
        "merge_mode": layer.config.get("merge_mode", "concat"),
        "layer": {"class_name": forward.class_name, "config": _layer_config(forward)},
    }
    weights = []
    for side in ("forward", "backward"):
        for key, value in layer.weights.items():
            if key.startswith(f"{side}/"):
                name = key.removeprefix(f"{side}/")
                weights.append(
                    (f"{layer.name}/{side}_{forward.name}/{name}", np.asarray(value, dtype="<f4"))
                )
    return config, weights


def _normalization_problem(layer: LayerSpec) -> str | None:
    """TF.js has no Normalization layer; one normalising a single axis, not inverted, is
    exported as the BatchNormalization that computes the same (see _as_batch_norm)."""
    axis = layer.config.get("axis", -1)
    if axis is None or (not isinstance(axis, int) and len(axis) != 1):
        return f"axis {axis!r} (TF.js can normalise one axis)"
    if layer.config.get("invert"):
        return "invert=True"
    try:
        normalization_statistics(layer.config, layer.weights)
    except LayerConfigUnsupported as error:
        return str(error)
    return None


def _frozen(name: str) -> dict[str, Any]:
    """What every exported layer's config starts with: inference only, in float32."""
    return {"name": name, "trainable": False, "dtype": "float32"}


def _batch_norm_config(name: str, axis: int) -> dict[str, Any]:
    """A TF.js BatchNormalization that only applies its moving statistics (and gamma, if
    `scale` is turned on): epsilon 0, no beta."""
    return {
        **_frozen(name),
        "axis": axis,
        "momentum": 0.99,
        "epsilon": 0.0,
        "center": False,
        "scale": False,
    }


def _as_batch_norm(layer: LayerSpec) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """Normalization as TF.js's BatchNormalization: no gamma or beta, epsilon 0, and as
    variance the square of Keras's divisor max(sqrt(variance), 1e-7), computed in float64."""
    axis = layer.config.get("axis", -1)
    mean, variance = normalization_statistics(layer.config, layer.weights)
    divisor = np.maximum(np.sqrt(np.asarray(variance, np.float64)), NORMALIZATION_EPSILON)
    config = _batch_norm_config(layer.name, axis if isinstance(axis, int) else int(axis[0]))
    weights = [
        (f"{layer.name}/moving_mean", np.asarray(mean, dtype="<f4").ravel()),
        (f"{layer.name}/moving_variance", np.asarray(divisor**2, dtype="<f4").ravel()),
    ]
    return config, weights


def _as_scaling(layer: LayerSpec) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """ConvNeXt's LayerScale (x * gamma per channel) as TF.js's BatchNormalization with
    mean 0, variance 1 and epsilon 0: x * rsqrt(1) * gamma, the same product exactly."""
    (gamma,) = (np.asarray(value, dtype="<f4") for value in layer.weights.values())
    config = {**_batch_norm_config(layer.name, -1), "scale": True}
    weights = [
        (f"{layer.name}/gamma", gamma),
        (f"{layer.name}/moving_mean", np.zeros_like(gamma)),
        (f"{layer.name}/moving_variance", np.ones_like(gamma)),
    ]
    return config, weights


def _is_thresholded(layer: LayerSpec) -> bool:
    """A ReLU with a threshold and no slope below it is TF.js's ThresholdedReLU."""
    return layer.class_name == "ReLU" and bool(layer.config.get("threshold"))


def _as_thresholded(layer: LayerSpec) -> dict[str, Any]:
    return {
        **_frozen(layer.name),
        "theta": float(layer.config["threshold"]),
    }


def _as_time_distributed(
    layer: LayerSpec,
) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """The wrapped layer's TF.js config inside; TF.js names its weights after the wrapper."""
    inner = replace(_wrapped(layer, "layer"), weights=layer.weights)
    class_name, config, _ = _tfjs_layer(inner)
    wrapper = {
        **_frozen(layer.name),
        "layer": {"class_name": class_name, "config": config},
    }
    weights = [
        (f"{layer.name}/{name}", np.asarray(value, dtype="<f4"))
        for name, value in layer.weights.items()
    ]
    return wrapper, weights


def _rewritten(layer: LayerSpec) -> bool:
    """Whether the layer is exported as something else than itself (another class, other
    weight names, or several layers)."""
    class_name, _, weights = _tfjs_layer(layer)
    plain = [f"{layer.name}/{name}" for name in layer.weights]
    return (
        class_name != layer.class_name
        or [name for name, _ in weights] != plain
        or _expanded(layer) != [layer]
    )


def _is_depthwise(layer: LayerSpec) -> bool:
    """A Conv2D with one group per input channel (ConvNeXt's 7x7) is a depthwise one."""
    groups = int(layer.config.get("groups", 1))
    kernel = layer.weights.get("kernel")
    return (
        layer.class_name == "Conv2D"
        and groups > 1
        and kernel is not None
        and kernel.shape[2] == 1
        and layer.config.get("data_format") != "channels_first"
    )


def _as_depthwise(layer: LayerSpec) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """The grouped Conv2D as TF.js's DepthwiseConv2D. Output channel c*m + j of both is
    input channel c's j-th filter, so the (h, w, 1, C*m) kernel is (h, w, C, m) reshaped."""
    kernel = layer.weights["kernel"]
    groups = int(layer.config["groups"])
    multiplier = kernel.shape[3] // groups
    config = {
        key: layer.config[key]
        for key in ("kernel_size", "strides", "padding", "dilation_rate", "use_bias")
    }
    config.update(
        name=layer.name,
        trainable=False,
        dtype="float32",
        data_format="channels_last",
        depth_multiplier=multiplier,
        activation=TFJS_ACTIVATIONS[activation_name(layer.config.get("activation", "linear"))],
    )
    depthwise = kernel.reshape(*kernel.shape[:2], groups, multiplier)
    weights = [(f"{layer.name}/depthwise_kernel", np.asarray(depthwise, dtype="<f4"))]
    if "bias" in layer.weights:
        weights.append((f"{layer.name}/bias", np.asarray(layer.weights["bias"], dtype="<f4")))
    return config, weights


def _layer_config(layer: LayerSpec) -> dict[str, Any]:
    if layer.is_input:
        return {
            "batch_input_shape": list(layer.output_shape),
            "dtype": "float32",
            "sparse": False,
            "name": layer.name,
        }
    config = {
        key: value
        for key, value in layer.config.items()
        if key not in DROPPED_KEYS
        and not key.endswith(("_initializer", "_regularizer", "_constraint"))
    }
    config["dtype"] = "float32"
    config["name"] = layer.name
    for key in ("activation", "recurrent_activation"):
        if key in config:
            config[key] = TFJS_ACTIVATIONS[activation_name(config[key])]
    if layer.class_name == "LeakyReLU":
        config["alpha"] = config.pop("negative_slope", 0.3)
    if layer.class_name == "ReLU":
        config.pop("negative_slope", None)
        config.pop("threshold", None)
    if layer.class_name == "Softmax" and isinstance(config.get("axis"), list):
        config["axis"] = config["axis"][0]
    return config


def _tfjs_layer(layer: LayerSpec) -> tuple[str, dict[str, Any], list[tuple[str, np.ndarray]]]:
    """The layer's TF.js class, config and weights, named as TF.js looks them up. Layers
    and operations TF.js lacks are exported as the TF.js layer that computes the same."""
    if layer.class_name.startswith(OPERATION_PREFIX):
        class_name, config = operation_layer(layer)
        return class_name, {**_frozen(layer.name), **config}, []
    if layer.class_name == "Normalization":
        return "BatchNormalization", *_as_batch_norm(layer)
    if layer.class_name == "LayerScale":
        return "BatchNormalization", *_as_scaling(layer)
    if _is_depthwise(layer):
        return "DepthwiseConv2D", *_as_depthwise(layer)
    if _is_thresholded(layer):
        return "ThresholdedReLU", _as_thresholded(layer), []
    if layer.class_name == "TimeDistributed":
        return "TimeDistributed", *_as_time_distributed(layer)
    if layer.class_name == "Bidirectional":
        return "Bidirectional", *_as_bidirectional(layer)
    renames = TFJS_WEIGHT_NAMES.get(layer.class_name, {})
    weights = [
        (f"{layer.name}/{renames.get(name, name)}", np.asarray(value, dtype="<f4"))
        for name, value in layer.weights.items()
    ]
    return layer.class_name, _layer_config(layer), weights


def tfjs_names(graph: ModelGraph) -> dict[str, str]:
    """Each node's name in the TF.js model: unchanged when TF.js-safe, else made safe
    and unique ('block/conv@2' -> 'block_conv_2')."""
    names: dict[str, str] = {}
    taken = {layer.name for layer in graph.layers}
    for layer in graph.layers:
        name = layer.name
        if TFJS_NAME_UNSAFE.search(name) or not name[:1].isalnum():
            name = base = TFJS_NAME_UNSAFE.sub("_", name)
            if not base[:1].isalnum():
                name = base = f"n{base}"
            suffix = 1
            while name in taken:
                suffix += 1
                name = f"{base}_{suffix}"
            taken.add(name)
        names[layer.name] = name
    return names


def _renamed(graph: ModelGraph) -> ModelGraph:
    names = tfjs_names(graph)
    return ModelGraph(
        name=graph.name,
        layers=[
            replace(layer, name=names[layer.name], inbound=[names[n] for n in layer.inbound])
            for layer in graph.layers
        ],
        outputs=[names[name] for name in graph.outputs],
    )


def _is_hard_silu(layer: LayerSpec) -> bool:
    if layer.class_name == OPERATION_PREFIX + "HardSilu":
        return True
    if layer.class_name != "Activation":
        return False
    try:
        return activation_name(layer.config["activation"]) in HARD_SILU
    except UnknownActivation:
        return False


def _as_hard_silu(layer: LayerSpec) -> list[LayerSpec]:
    """x * relu6(x + 3) / 6 (MobileNetV3's hard-swish), which TF.js has no activation for,
    as the four TF.js layers that compute it (the division as a product with 1/6, equal
    within rounding); the last keeps the node's name."""
    (source,) = layer.inbound

    def step(suffix: str, class_name: str, config: dict[str, Any], inbound: list[str]) -> LayerSpec:
        name = f"{layer.name}{suffix}"
        return LayerSpec(name, class_name, {"name": name, **config}, {}, inbound, ())

    shifted = step("__plus3", "Rescaling", {"scale": 1.0, "offset": 3.0}, [source])
    clipped = step("__relu6", "ReLU", {"max_value": 6.0}, [shifted.name])
    gate = step("__div6", "Rescaling", {"scale": 1.0 / 6.0, "offset": 0.0}, [clipped.name])
    return [shifted, clipped, gate, step("", "Multiply", {}, [source, gate.name])]


def _as_kept_dims(layer: LayerSpec) -> list[LayerSpec]:
    """Global pooling with keepdims=True (MobileNetV3's squeeze-excite) as TF.js's global
    pooling, which has no keepdims, then a Reshape to (1, ..., channels): the same values."""
    pooled = replace(
        layer,
        name=f"{layer.name}__pool",
        config={**layer.config, "name": f"{layer.name}__pool", "keepdims": False},
    )
    target = [1] * (len(layer.output_shape) - 2) + [layer.output_shape[-1]]
    reshape = LayerSpec(
        layer.name, "Reshape", {"name": layer.name, "target_shape": target}, {}, [pooled.name], ()
    )
    return [pooled, reshape]


def _expanded(layer: LayerSpec) -> list[LayerSpec]:
    """A node TF.js has no one layer for, as the TF.js layers that compute it."""
    if _is_hard_silu(layer):
        return _as_hard_silu(layer)
    if layer.class_name in GLOBAL_POOLING and layer.config.get("keepdims"):
        return _as_kept_dims(layer)
    return [layer]


def _without_masks(graph: ModelGraph) -> ModelGraph:
    """The graph without the nodes computing masks, which TF.js's layers compute
    themselves (see masks.py), nor the consumers' mask inputs."""
    masks = tfjs_masks(graph)
    return ModelGraph(
        name=graph.name,
        layers=[
            replace(layer, inbound=[n for n in layer.inbound if n not in masks])
            for layer in graph.layers
            if layer.name not in masks
        ],
        outputs=graph.outputs,
    )


def _tfjs_graph(graph: ModelGraph) -> ModelGraph:
    """The graph TF.js loads: no mask nodes, names made TF.js-safe, some nodes expanded
    (`_expanded`)."""
    graph = _renamed(_without_masks(graph))
    layers = [part for layer in graph.layers for part in _expanded(layer)]
    return ModelGraph(name=graph.name, layers=layers, outputs=graph.outputs)


def tfjs_computed(graph: ModelGraph) -> list[LayerSpec]:
    """The nodes TF.js outputs: all but those computing masks."""
    masks = tfjs_masks(graph)
    return [layer for layer in graph.compute_layers if layer.name not in masks]


def export_problem(graph: ModelGraph) -> str | None:
    """'unsupported: <layer> (<class>) ...' for the first node TF.js cannot compute."""
    problem = mask_problem(graph)
    if problem is not None:
        return problem
    for layer in tfjs_computed(graph):
        reason = unsupported_reason(layer)
        if reason is not None:
            return reason
    return None


def isolated_steps(graph: ModelGraph) -> dict[str, list[dict[str, Any]]]:
    """How the page computes each node alone: the TF.js layers it was exported as, in
    order, each fed the node's own inputs (by index) or an earlier step's output (by
    name), and a node called with a mask given it (`mask`: its index among the node's
    inputs). One step for a node exported as one layer."""
    renamed = _renamed(graph)
    masks = tfjs_masks(graph)
    names = tfjs_names(graph)
    mask_names = {names[mask] for mask in masks}
    steps: dict[str, list[dict[str, Any]]] = {}
    for original, layer in zip(graph.layers, renamed.layers, strict=True):
        if layer.is_input or original.name in masks:
            continue
        parts = _expanded(layer)
        made = {part.name for part in parts}
        steps[original.name] = [
            {
                "layer": part.name,
                "inputs": [
                    n if n in made else layer.inbound.index(n)
                    for n in part.inbound
                    if n not in mask_names
                ],
            }
            for part in parts
        ]
        mask = mask_input(original)
        if mask is not None:
            steps[original.name][-1]["mask"] = mask
    return steps


def model_json(graph: ModelGraph) -> tuple[dict[str, Any], bytes]:
    """The model.json document and the weights file's bytes; layers named by `tfjs_names`."""
    graph = _tfjs_graph(graph)
    layers: list[dict[str, Any]] = []
    weights: list[tuple[str, np.ndarray]] = []
    for layer in graph.layers:
        class_name, config, layer_weights = _tfjs_layer(layer)
        layers.append(
            {
                "class_name": class_name,
                "name": layer.name,
                "config": config,
                "inbound_nodes": [] if layer.is_input else [[[n, 0, 0, {}] for n in layer.inbound]],
            }
        )
        weights.extend(layer_weights)
    topology = {
        "class_name": "Model",
        "config": {
            "name": graph.name,
            "layers": layers,
            "input_layers": [[layer.name, 0, 0] for layer in graph.inputs],
            "output_layers": [[name, 0, 0] for name in graph.outputs],
        },
        "keras_version": "2.15.0",
        "backend": "tensorflow",
    }
    document = {
        "format": "layers-model",
        "generatedBy": "driftbench",
        "convertedBy": "driftbench tfjs_export",
        "modelTopology": topology,
        "weightsManifest": [
            {
                "paths": ["weights.bin"],
                "weights": [
                    {"name": name, "shape": list(value.shape), "dtype": "float32"}
                    for name, value in weights
                ],
            }
        ],
    }
    return document, b"".join(value.tobytes() for _, value in weights)


def export_model(graph: ModelGraph, directory: Path) -> Path:
    """Write model.json and weights.bin into `directory`; returns the model.json path."""
    problem = export_problem(graph)
    if problem is not None:
        raise ValueError(problem)
    document, weights = model_json(graph)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "weights.bin").write_bytes(weights)
    path = directory / "model.json"
    path.write_text(json.dumps(document))
    return path
