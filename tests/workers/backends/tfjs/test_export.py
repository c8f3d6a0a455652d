"""The Keras 3 -> TF.js layers-format exporter, checked without a browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import randomize_weights
from workers.backends.tfjs.export import (
    export_model,
    export_problem,
    isolated_steps,
    model_json,
    tfjs_computed,
    tfjs_names,
    unsupported_reason,
)


def test_topology_is_keras2_functional_with_named_weights(keras: Any, save_model: Any) -> None:
    inp = keras.Input((6, 6, 2), name="img")
    a = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inp)
    b = keras.layers.Conv2D(2, 1, name="pw")(inp)
    out = keras.layers.Concatenate(name="cat")([a, b])
    model = keras.Model(inp, keras.layers.LeakyReLU(negative_slope=0.1, name="leaky")(out))
    randomize_weights(model, seed=3)
    document, weights = model_json(save_model(model).graph)
    config = document["modelTopology"]["config"]
    layers = {layer["name"]: layer for layer in config["layers"]}
    assert document["format"] == "layers-model"
    assert layers["img"]["config"]["batch_input_shape"] == [None, 6, 6, 2]
    assert layers["cat"]["inbound_nodes"] == [[["dw", 0, 0, {}], ["pw", 0, 0, {}]]]
    assert layers["leaky"]["config"]["alpha"] == pytest.approx(0.1)
    assert all(layer["config"].get("dtype", "float32") == "float32" for layer in layers.values())
    assert config["output_layers"] == [["leaky", 0, 0]]
    names = [w["name"] for w in document["weightsManifest"][0]["weights"]]
    assert names == ["dw/depthwise_kernel", "dw/bias", "pw/kernel", "pw/bias"]
    kernel = np.frombuffer(weights[: 3 * 3 * 2 * 4], dtype="<f4").reshape(3, 3, 2, 1)
    assert np.array_equal(kernel, model.get_layer("dw").get_weights()[0])


@pytest.mark.parametrize(
    ("make_layer", "expected"),
    [
        (
            lambda L: L.Activation("leaky_relu", name="act"),
            "unsupported: act (Activation) activation 'leaky_relu'",
        ),
        (
            lambda L: L.Conv1D(4, 2, groups=2, name="grouped"),
            "unsupported: grouped (Conv1D) groups=2 (TF.js convolutions are ungrouped or "
            "depthwise)",
        ),
        (lambda L: L.ReLU(threshold=0.5, name="thr"), None),
        (
            lambda L: L.ReLU(negative_slope=0.1, name="slope"),
            "unsupported: slope (ReLU) negative_slope (TF.js's ReLU has none)",
        ),
        (
            lambda L: L.ReLU(threshold=0.5, max_value=2.0, name="thr"),
            "unsupported: thr (ReLU) threshold with max_value (TF.js's ThresholdedReLU has no "
            "maximum)",
        ),
        (
            lambda L: L.Resizing(8, 8, name="resize"),
            "unsupported: resize (Resizing) (tfjs-layers 4.22's Resizing fails in a loaded "
            "model, 'x must be rank 3 or 4, but got rank 1', and would resize with "
            "align_corners, not Keras's half-pixel centres)",
        ),
        (
            lambda L: L.TimeDistributed(L.ReLU(threshold=0.5), name="td"),
            "unsupported: td (TimeDistributed) wrapped ReLU: TF.js's TimeDistributed takes a "
            "layer as it is",
        ),
        (
            lambda L: L.TimeDistributed(L.Dense(3, activation="sparsemax"), name="td"),
            "unsupported: td (TimeDistributed) wrapped Dense activation 'sparsemax'",
        ),
        (lambda L: L.SpatialDropout1D(0.1, name="sd"), None),
        (
            lambda L: L.ActivityRegularization(name="reg"),
            "unsupported: reg (ActivityRegularization) (tfjs-layers 4.22 has no such layer)",
        ),
        (lambda L: L.Rescaling(0.5, offset=1.0, name="scale"), None),
        (
            lambda L: L.Rescaling([0.5, 1.0, 2.0, 3.0], name="scale"),
            "unsupported: scale (Rescaling) per-channel scale or offset "
            "(TF.js Rescaling takes numbers)",
        ),
        (lambda L: L.Normalization(mean=[0, 1, 2, 3], variance=[1, 1, 1, 1], name="norm"), None),
        (
            lambda L: L.Normalization(axis=(1, 2), name="norm"),
            "unsupported: norm (Normalization) axis (1, 2) (TF.js can normalise one axis)",
        ),
        (
            lambda L: L.Normalization(mean=0.0, variance=1.0, invert=True, name="norm"),
            "unsupported: norm (Normalization) invert=True",
        ),
        (lambda L: L.LSTM(3, name="rec"), None),
        (
            lambda L: L.GRU(3, name="rec"),
            "unsupported: rec (GRU) reset_after=True (TF.js's GRU has only the Keras 1 form, "
            "reset_after=False)",
        ),
        (
            lambda L: L.LSTM(3, recurrent_activation="sparsemax", name="rec"),
            "unsupported: rec (LSTM) recurrent_activation 'sparsemax'",
        ),
        (
            lambda L: L.Bidirectional(L.GRU(3), name="bi"),
            "unsupported: bi (Bidirectional) wrapped GRU: reset_after=True (TF.js's GRU has "
            "only the Keras 1 form, reset_after=False)",
        ),
        (
            lambda L: L.Bidirectional(
                L.LSTM(3), backward_layer=L.SimpleRNN(3, go_backwards=True), name="bi"
            ),
            "unsupported: bi (Bidirectional) a backward_layer that is not the forward layer "
            "reversed",
        ),
    ],
)
def test_layers_tfjs_lacks_are_named(
    keras: Any, save_model: Any, make_layer: Any, expected: str | None
) -> None:
    model = keras.Sequential([keras.Input((4, 4)), make_layer(keras.layers)])
    layer = save_model(model).graph.compute_layers[0]
    assert unsupported_reason(layer) == expected


def test_export_refuses_an_unsupported_model(keras: Any, save_model: Any, tmp_path: Path) -> None:
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Subtract(name="diff")([inp, inp]))
    with pytest.raises(ValueError, match=r"unsupported: diff \(Subtract\)"):
        export_model(save_model(model).graph, tmp_path / "out")


def test_export_writes_model_json_and_weights(example: Any, tmp_path: Path) -> None:
    path = export_model(example("dense10x50").graph, tmp_path / "dense")
    document = json.loads(path.read_text())
    manifest = document["weightsManifest"][0]
    assert manifest["paths"] == ["weights.bin"]
    assert (tmp_path / "dense" / "weights.bin").stat().st_size == 10 * (50 * 50 + 50) * 4


def exported_layers(graph: Any) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """The TF.js layers by name, and the weights by their TF.js name."""
    document, blob = model_json(graph)
    layers = {layer["name"]: layer for layer in document["modelTopology"]["config"]["layers"]}
    weights, offset = {}, 0
    for entry in document["weightsManifest"][0]["weights"]:
        size = int(np.prod(entry["shape"]))
        weights[entry["name"]] = np.frombuffer(blob, "<f4", size, offset).reshape(entry["shape"])
        offset += 4 * size
    return layers, weights


def test_nested_and_repeated_nodes_get_tfjs_safe_names_and_their_own_weights(
    keras: Any, save_model: Any
) -> None:
    """TF.js looks weights up as '<layer>/<weight>': a path or '@' in a layer name is
    renamed, uniquely, and each call of a shared layer is a layer with its weights."""
    L = keras.layers
    inner = keras.Sequential([keras.Input((3,)), L.Dense(3, name="d")], name="inner")
    x = keras.Input((3,), name="x")
    shared = L.Dense(3, name="s")
    model = keras.Model(x, shared(shared(inner(x))))
    randomize_weights(model, seed=5)
    graph = save_model(model).graph
    assert tfjs_names(graph) == {"x": "x", "inner/d": "inner_d", "s@1": "s_1", "s@2": "s_2"}
    renamed = model_json(
        save_model(keras.Sequential([keras.Input((2,)), L.Dense(1, name="_h")])).graph
    )
    assert renamed[0]["modelTopology"]["config"]["layers"][1]["name"] == "n_h"
    layers, weights = exported_layers(graph)
    assert layers["s_2"]["inbound_nodes"] == [[["s_1", 0, 0, {}]]]
    assert layers["s_2"]["config"]["name"] == "s_2"
    np.testing.assert_array_equal(weights["s_1/kernel"], weights["s_2/kernel"])
    np.testing.assert_array_equal(weights["inner_d/kernel"], inner.get_layer("d").kernel.numpy())


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (lambda ops, a, b: a + 3.0, ("Rescaling", {"scale": 1.0, "offset": 3.0})),
        (lambda ops, a, b: 2.0 - a, ("Rescaling", {"scale": -1.0, "offset": 2.0})),
        (lambda ops, a, b: a / 4.0, ("Rescaling", {"scale": 0.25, "offset": 0.0})),
        (lambda ops, a, b: -a, ("Rescaling", {"scale": -1.0, "offset": 0.0})),
        (lambda ops, a, b: a * b, ("Multiply", {})),
        (lambda ops, a, b: ops.maximum(a, b), ("Maximum", {})),
        (lambda ops, a, b: ops.tanh(a), ("Activation", {"activation": "tanh"})),
        (lambda ops, a, b: ops.silu(a), ("Activation", {"activation": "swish"})),
        (lambda ops, a, b: ops.concatenate([a, b], axis=-1), ("Concatenate", {"axis": -1})),
        (lambda ops, a, b: ops.transpose(a, (0, 2, 1)), ("Permute", {"dims": [2, 1]})),
        (lambda ops, a, b: a - b, "only a tensor and a number"),
        (lambda ops, a, b: ops.gelu(a), "approximate=True"),
        (lambda ops, a, b: ops.reshape(a, (-1, 12)), ("Reshape", {"target_shape": [12]})),
        (lambda ops, a, b: ops.reshape(a, (-1, 3)), "no TF.js layer"),
        (lambda ops, a, b: ops.power(a, 2.0), "no TF.js layer"),
    ],
)
def test_operations_are_exported_as_the_tfjs_layer_computing_them(
    keras: Any, save_model: Any, operation: Any, expected: Any
) -> None:
    x = keras.Input((4, 3), name="x")
    a, b = keras.layers.Dense(3, name="a")(x), keras.layers.Dense(3, name="b")(x)
    model = keras.Model(x, operation(keras.ops, a, b))
    graph = save_model(model).graph
    node = graph.compute_layers[-1]
    assert node.class_name.startswith("ops.")
    reason = unsupported_reason(node)
    if isinstance(expected, str):
        assert reason is not None and reason.startswith(
            f"unsupported: {node.name} ({node.class_name})"
        )
        assert expected in reason
        return
    assert reason is None
    layers, _ = exported_layers(graph)
    exported = layers[tfjs_names(graph)[node.name]]
    assert exported["class_name"] == expected[0]
    assert {k: exported["config"][k] for k in expected[1]} == expected[1]


def test_layers_tfjs_lacks_are_rewritten_as_layers_it_has(keras: Any, save_model: Any) -> None:
    """Hard-swish as four layers, keepdims pooling as pooling then Reshape, a one-group-per-
    channel Conv2D as a DepthwiseConv2D (kernel regrouped), LayerScale as a
    BatchNormalization that multiplies by gamma."""
    from keras.src.applications.convnext import LayerScale

    L = keras.layers
    x = keras.Input((5, 5, 4), name="x")
    grouped = L.Conv2D(8, 3, groups=4, padding="same", name="grouped")(x)
    scaled = LayerScale(0.5, 8, name="scale")(grouped)
    swished = L.Activation("hard_silu", name="swish")(scaled)
    pooled = L.GlobalAveragePooling2D(keepdims=True, name="squeeze")(swished)
    model = keras.Model(x, L.Multiply(name="excite")([swished, pooled]))
    randomize_weights(model, seed=6)
    graph = save_model(model).graph
    assert all(unsupported_reason(layer) is None for layer in graph.compute_layers)
    layers, weights = exported_layers(graph)
    assert layers["grouped"]["class_name"] == "DepthwiseConv2D"
    assert layers["grouped"]["config"]["depth_multiplier"] == 2
    kernel = model.get_layer("grouped").kernel.numpy()  # (3, 3, 1, 8): output c*2 + j
    np.testing.assert_array_equal(
        weights["grouped/depthwise_kernel"][:, :, 1, 0], kernel[:, :, 0, 2]
    )
    assert layers["scale"]["class_name"] == "BatchNormalization"
    np.testing.assert_array_equal(
        weights["scale/gamma"], model.get_layer("scale").weights[0].numpy()
    )
    assert [layers[f"swish{s}"]["class_name"] for s in ("__plus3", "__relu6", "__div6", "")] == [
        "Rescaling",
        "ReLU",
        "Rescaling",
        "Multiply",
    ]
    assert layers["swish"]["inbound_nodes"] == [[["scale", 0, 0, {}], ["swish__div6", 0, 0, {}]]]
    assert layers["squeeze"]["class_name"] == "Reshape"
    assert layers["squeeze"]["config"]["target_shape"] == [1, 1, 8]
    assert layers["squeeze__pool"]["class_name"] == "GlobalAveragePooling2D"


def test_masks_keras_computes_are_left_to_the_tfjs_layers(keras: Any, save_model: Any) -> None:
    """Embedding(mask_zero) and Masking: the operation nodes computing their masks are not
    exported (TF.js's layers compute the masks themselves), the consumers lose their mask
    input, and isolated mode hands each consumer its mask."""
    L = keras.layers
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    steps = keras.Input((5, 3), name="steps")
    read = L.LSTM(4, name="read")(L.Embedding(9, 3, mask_zero=True, name="embed")(tokens))
    walked = L.GRU(4, reset_after=False, name="walk")(L.Masking(0.5, name="masking")(steps))
    model = keras.Model([tokens, steps], L.Concatenate(name="both")([read, walked]))
    graph = save_model(model).graph
    masks = {layer.name for layer in graph.compute_layers if layer.class_name.startswith("ops.")}
    assert len(masks) == 3  # not_equal for the embedding; not_equal and any for Masking
    assert export_problem(graph) is None
    assert {layer.name for layer in tfjs_computed(graph)} == {
        layer.name for layer in graph.compute_layers
    } - masks
    document, _ = model_json(graph)
    exported = {layer["name"]: layer for layer in document["modelTopology"]["config"]["layers"]}
    assert not masks & set(exported)
    assert exported["read"]["inbound_nodes"] == [[["embed", 0, 0, {}]]]
    assert exported["embed"]["config"]["mask_zero"] is True
    assert exported["masking"]["config"]["mask_value"] == 0.5
    steps_of = isolated_steps(graph)
    assert steps_of["read"] == [{"layer": "read", "inputs": [0], "mask": 1}]
    assert graph.layer("read").inbound[1] in masks
    assert not masks & set(steps_of)


def test_a_mask_tfjs_cannot_compute_is_refused_not_dropped(keras: Any, save_model: Any) -> None:
    """A mask written with keras.ops has no TF.js form; leaving it out would change what
    the recurrent layer computes, so the TF.js backends refuse the model."""
    x = keras.Input((5, 3), name="x")
    mask = keras.ops.any(keras.ops.not_equal(x, 1.0), axis=-1)
    model = keras.Model(x, keras.layers.LSTM(4, name="lstm")(x, mask=mask))
    graph = save_model(model).graph
    problem = export_problem(graph)
    assert problem is not None
    assert problem.startswith("unsupported: lstm (LSTM) takes a mask computed by ")
    assert "only from Embedding(mask_zero=True) and Masking" in problem
    with pytest.raises(ValueError, match="unsupported: lstm"):
        export_model(graph, Path("/nonexistent"))
