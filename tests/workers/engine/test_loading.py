"""Loading .keras and .h5 models safely: formats, wiring, and refusals that name the layer."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import randomize_weights
from workers.engine.loading import (
    ModelRefused,
    declared_parameter_count,
    load_artifact,
    read_model_config,
)
from workers.engine.options import DEFAULT_OPTIONS, EngineOptions
from workers.engine.unroll import capture_model


def branching_model(keras: Any) -> Any:
    inp = keras.Input((6,), name="x")
    left = keras.layers.Dense(4, name="left")(inp)
    right = keras.layers.Dense(4, activation="tanh", name="right")(inp)
    merged = keras.layers.Concatenate(name="joined")([left, right])
    return keras.Model(inp, keras.layers.Dense(2, name="head")(merged), name="branchy")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_functional_branches_and_merges_are_wired(keras: Any, tmp_path: Path, suffix: str) -> None:
    model = branching_model(keras)
    randomize_weights(model, seed=1)
    path = tmp_path / f"branchy{suffix}"
    model.save(path)
    graph = load_artifact(path).graph
    assert [layer.name for layer in graph.compute_layers] == ["left", "right", "joined", "head"]
    assert graph.layer("joined").inbound == ["left", "right"]
    assert graph.layer("left").inbound == ["x"]
    assert graph.outputs == ["head"]
    assert graph.layer("head").param_count == 8 * 2 + 2
    assert graph.layer("joined").output_shape == (None, 8)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_sequential_is_a_chain_with_its_weights(keras: Any, tmp_path: Path, suffix: str) -> None:
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(5, name="a"),
            keras.layers.BatchNormalization(name="bn"),
        ]
    )
    randomize_weights(model, seed=2)
    path = tmp_path / f"chain{suffix}"
    model.save(path)
    graph = load_artifact(path).graph
    assert graph.layer("bn").inbound == ["a"]
    assert graph.layer("a").inbound == [graph.inputs[0].name]
    assert sorted(graph.layer("bn").weights) == ["beta", "gamma", "moving_mean", "moving_variance"]
    assert (graph.layer("a").weights["kernel"] == model.get_layer("a").get_weights()[0]).all()


def test_lambda_layer_is_refused_by_name(keras: Any, tmp_path: Path) -> None:
    inp = keras.Input((3,))
    out = keras.layers.Lambda(lambda t: t * 2, name="doubler")(keras.layers.Dense(2)(inp))
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(ModelRefused, match=r"layer 'doubler' is a Lambda layer"):
        load_artifact(path)


@pytest.mark.parametrize(
    ("module", "class_name", "problem"),
    [
        ("keras.src.ops.core", "Cond", "is not one of Keras's operation modules"),
        ("keras.src.ops.numpy", "Popen", "keras.src.ops.numpy has no operation 'Popen'"),
    ],
)
def test_operation_nodes_outside_kerass_operations_are_refused(
    keras: Any, tmp_path: Path, module: str, class_name: str, problem: str
) -> None:
    """An operation node is loaded only from Keras's own operation modules and only as an
    Operation class there: the file names the class, and a hostile one names anything."""
    inp = keras.Input((3,))
    out = keras.layers.Dense(2)(keras.ops.tanh(keras.layers.Dense(3)(inp)))
    path = tmp_path / "ops.keras"
    keras.Model(inp, out).save(path)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    [node] = [n for n in config["config"]["layers"] if n["class_name"] == "Tanh"]
    node.update(module=module, class_name=class_name, registered_name=class_name)
    entries["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(ModelRefused) as refused:
        load_artifact(path)
    message = str(refused.value)
    assert message.startswith(f"operation node '{node['config']['name']}' ({class_name}): ")
    assert problem in message and "\n" not in message and refused.value.status == 422


def test_lambda_in_h5_is_refused_before_keras_sees_it(keras: Any, tmp_path: Path) -> None:
    inp = keras.Input((3,))
    out = keras.layers.Lambda(lambda t: t + 1, name="plus_one")(inp)
    path = tmp_path / "lambda.h5"
    keras.Model(inp, out).save(path)
    with pytest.raises(ModelRefused, match=r"'plus_one' is a Lambda layer"):
        load_artifact(path)


def test_custom_layer_is_refused_and_never_executed(keras: Any, tmp_path: Path) -> None:
    calls: list[str] = []

    @keras.saving.register_keras_serializable(package="Hostile")
    class Exploding(keras.layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            calls.append("init")
            super().__init__(**kwargs)

        def call(self, x: Any) -> Any:
            return x

    inp = keras.Input((3,))
    path = tmp_path / "custom.keras"
    keras.Model(inp, Exploding(name="boom")(inp)).save(path)
    calls.clear()
    with pytest.raises(ModelRefused, match=r"layer 'boom' has class 'Exploding'"):
        load_artifact(path)
    assert calls == []


def test_custom_object_inside_a_builtin_layer_is_refused(keras: Any, tmp_path: Path) -> None:
    path = tmp_path / "sneaky.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")]).save(path)
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][1]["config"]["kernel_initializer"] = {
        "module": "evil.module",
        "class_name": "Payload",
        "config": {},
        "registered_name": None,
    }
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with pytest.raises(
        ModelRefused, match=r"layer 'd' \(Dense\) refers to Payload from module 'evil"
    ):
        load_artifact(path)


def test_not_a_model_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.keras"
    path.write_text("hello")
    with pytest.raises(ModelRefused, match="not a Keras model"):
        load_artifact(path)


def test_content_and_extension_must_agree(keras: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)
    renamed = path.rename(tmp_path / "model.h5")
    with pytest.raises(ModelRefused, match=r"is a \.keras file but the name ends in '\.h5'"):
        load_artifact(renamed)


def test_truncated_zip_is_refused(keras: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelRefused, match="unreadable keras model file"):
        load_artifact(path)


@pytest.mark.parametrize("example_name", ["cifar_cnn", "dense10x50"])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_declared_parameters_match_the_built_model(
    keras: Any, example: Any, tmp_path: Path, example_name: str, suffix: str
) -> None:
    model = keras.saving.load_model(example(example_name).path, compile=False)
    path = tmp_path / f"model{suffix}"
    model.save(path)
    config = read_model_config(path, DEFAULT_OPTIONS.max_unpacked_bytes)
    assert declared_parameter_count(path, config, keras) == model.count_params()


def test_parameter_limit_refuses_before_allocating(keras: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)]).save(path)
    with pytest.raises(ModelRefused, match="declares 20 parameters, over the limit of 19"):
        load_artifact(path, EngineOptions(max_model_params=19))
    loaded = load_artifact(path, EngineOptions(max_model_params=20))
    assert loaded.graph.layers[-1].param_count == 20


def test_zip_entries_outside_the_archive_and_bombs_are_refused(keras: Any, tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)
    original = path.read_bytes()
    for name in ("../x.py", "/etc/cron.d/x", "assets/../../x", "C:/x"):
        path.write_bytes(original)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(name, b"x")
        with pytest.raises(ModelRefused, match="points outside the archive"):
            load_artifact(path)
    path.write_bytes(original)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", bytes(4 * 1024 * 1024))
    with pytest.raises(ModelRefused, match=r"unpacks to \d+ bytes from \d+, over the 4194304"):
        load_artifact(path, EngineOptions(max_unpacked_bytes=4 * 1024 * 1024))


def test_capture_model_outputs_every_node(keras: Any, example: Any) -> None:
    """The all-nodes model a user would build: one output per node, in graph order, the
    last one the model's own prediction."""
    artifact = example("regression")
    model = keras.saving.load_model(artifact.path, compile=False)
    capture = capture_model(keras, model)
    names = [layer.name for layer in artifact.graph.compute_layers]
    assert capture.names == names
    batch = np.ones((2, *model.inputs[0].shape[1:]), dtype=np.float32)
    outputs = capture.model.predict(batch, verbose=0)
    assert [tuple(output.shape) for output in outputs] == [
        (2, *artifact.graph.layer(name).output_shape[1:]) for name in names
    ]
    np.testing.assert_allclose(outputs[-1], model.predict(batch, verbose=0), rtol=1e-6)
