"""Nested models, repeated calls and keras.ops nodes unrolled into one graph of nodes.

Every node gets its own output; names say where it lives (`outer/inner/dense`), which
call it is (`shared@2`) and, for an operation Keras added itself, its kind and rank
(`not_equal#1`), the same at every load. The capture model replays every node and
must give the user's own `model.predict` numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import randomize_weights
from workers.engine.errors import InvalidRequest
from workers.engine.loading import load_artifact, load_keras_model
from workers.engine.unroll import capture_model


def nested_model(keras: Any) -> Any:
    """A Sequential inside a Functional inside a Functional, a layer called twice and
    operations between layers."""
    L = keras.layers
    innermost = keras.Sequential(
        [keras.Input((6,)), L.Dense(5, name="d1"), L.Dense(4, name="d2")], name="block"
    )
    middle_in = keras.Input((6,), name="middle_in")
    middle = keras.Model(middle_in, L.ReLU(name="act")(innermost(middle_in)), name="middle")
    x = keras.Input((6,), name="x")
    features = middle(x)
    shared = L.Dense(4, name="shared")
    twice = shared(shared(features))
    gated = keras.ops.tanh(twice) * 0.5 + 1.0
    return keras.Model(x, L.Add(name="joined")([gated, features]), name="outer")


def test_nested_models_are_unrolled_under_their_path(keras: Any, tmp_path: Path) -> None:
    model = nested_model(keras)
    randomize_weights(model, seed=3)
    path = tmp_path / "nested.keras"
    model.save(path)
    graph = load_artifact(path).graph
    names = [layer.name for layer in graph.compute_layers]
    assert names[:3] == ["middle/block/d1", "middle/block/d2", "middle/act"]
    assert graph.layer("middle/block/d1").inbound == ["x"]
    assert graph.layer("shared@1").inbound == ["middle/act"]
    assert graph.layer("shared@2").inbound == ["shared@1"]
    assert graph.layer("joined").inbound[1] == "middle/act"
    assert graph.outputs == ["joined"]
    kernel = model.get_layer("middle").get_layer("block").get_layer("d1").get_weights()[0]
    np.testing.assert_array_equal(graph.layer("middle/block/d1").weights["kernel"], kernel)
    operations = [layer for layer in graph.compute_layers if layer.class_name.startswith("ops.")]
    assert [layer.class_name for layer in operations] == ["ops.Tanh", "ops.Multiply", "ops.Add"]
    assert operations[1].config["call"]["args"] == [{"input": 0}, 0.5]


def test_every_node_is_captured_and_the_last_is_the_models_prediction(
    keras: Any, tmp_path: Path
) -> None:
    model = nested_model(keras)
    randomize_weights(model, seed=4)
    path = tmp_path / "nested.keras"
    model.save(path)
    graph = load_artifact(path).graph
    loaded = load_keras_model(path, keras)
    capture = capture_model(keras, loaded)
    assert capture.names == [layer.name for layer in graph.compute_layers]
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    outputs = dict(zip(capture.names, capture.model.predict(x, verbose=0), strict=True))
    np.testing.assert_allclose(outputs["joined"], loaded.predict(x, verbose=0), rtol=1e-5)
    # The first call's output is the second call's input, computed by hand from the weights.
    shared = graph.layer("shared@1").weights
    np.testing.assert_allclose(
        outputs["shared@2"], outputs["shared@1"] @ shared["kernel"] + shared["bias"], rtol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(capture.call("shared@2", [outputs["shared@1"]])), outputs["shared@2"]
    )


def test_operations_keras_adds_are_named_the_same_at_every_load(keras: Any, tmp_path: Path) -> None:
    """A Sequential model's mask (Masking -> LSTM) is computed by NotEqual and Any nodes
    Keras adds at load time with a process-wide counter; their names must not depend on
    what else the process loaded."""
    model = keras.Sequential(
        [
            keras.Input((4, 3)),
            keras.layers.Masking(0.0, name="masking"),
            keras.layers.LSTM(2, name="lstm"),
        ],
        name="masked",
    )
    path = tmp_path / "masked.keras"
    model.save(path)
    first = [layer.name for layer in load_artifact(path).graph.compute_layers]
    for _ in range(2):
        load_keras_model(path, keras)
    second = load_artifact(path).graph
    assert [layer.name for layer in second.compute_layers] == first
    assert "not_equal#1" in first and "any#1" in first
    assert second.layer("lstm").config["call"]["kwargs"]["mask"] == {"input": 1}


def test_a_layer_returning_several_tensors_is_refused_in_one_line(
    keras: Any, tmp_path: Path
) -> None:
    x = keras.Input((4, 3), name="x")
    output, state_h, _ = keras.layers.LSTM(2, return_state=True, name="lstm")(x)
    path = tmp_path / "states.keras"
    keras.Model(x, keras.layers.Add(name="sum")([output, state_h])).save(path)
    with pytest.raises(InvalidRequest) as refused:
        load_artifact(path)
    message = str(refused.value)
    assert message.startswith("'lstm' (LSTM) returns 3 tensors; driftbench compares one")
    assert "\n" not in message and refused.value.status == 422
