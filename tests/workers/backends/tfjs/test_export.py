"""The Keras 3 -> TF.js layers-format exporter, checked without a browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import randomize_weights
from workers.backends.tfjs.export import export_model, model_json, unsupported_reason


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
            "unsupported: grouped (Conv1D) groups=2",
        ),
        (
            lambda L: L.ReLU(threshold=0.5, name="thr"),
            "unsupported: thr (ReLU) negative_slope/threshold",
        ),
        (lambda L: L.SpatialDropout1D(0.1, name="sd"), None),
        (
            lambda L: L.ActivityRegularization(name="reg"),
            "unsupported: reg (ActivityRegularization)",
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
