"""`c` and `c-fastmath`: the generated C port compiled by the system compiler and run,
checked against Keras (independent of our numpy port) and the float64 reference."""

from __future__ import annotations

import shutil
import stat
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import randomize_weights
from workers.backends.c import layers as c_layers
from workers.backends.c.program import generate, port_problem
from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.engine.compare import compare
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.options import EngineOptions
from workers.engine.results import MODES

WITHIN_ROUNDING = {"identical", "rounding"}


def verdicts(
    artifact: Any, results: dict[str, Any], backend: str, against: str
) -> dict[str, dict[str, str]]:
    """{mode: {layer: verdict}} of one backend against another."""
    found = compare(artifact.graph, results, against=against, modes=MODES)
    return {
        c.mode: {row.layer: row.divergence.verdict for row in c.layers}
        for c in found
        if c.backend == backend
    }


def run(pool: RunnerPool, artifact: Any, backends: list[str], seed: int = 3) -> dict[str, Any]:
    inputs = generate_inputs(
        InputRecipe("uniform", batch=3, seed=seed), artifact.graph.input_shapes
    )
    results = run_locally(
        pool, artifact, inputs, backends=backends, reference="numpy-f64", modes=MODES
    )
    for backend in backends:
        assert results[backend].status == "done", (backend, results[backend].reason)
    return results


def assert_within_rounding(
    artifact: Any, results: dict[str, Any], backend: str, against: str
) -> None:
    found = verdicts(artifact, results, backend, against)
    assert set(found) == set(MODES)
    for mode, layers in found.items():
        assert len(layers) == len(artifact.graph.compute_layers)
        bad = {layer: v for layer, v in layers.items() if v not in WITHIN_ROUNDING}
        assert not bad, (backend, against, mode, bad)


@pytest.mark.parametrize("name", ["dense10x50", "cifar_cnn"])
def test_the_strict_port_is_within_rounding_of_keras_and_the_reference(
    name: str, example: Any, runner_pool: RunnerPool
) -> None:
    artifact = example(name)
    results = run(runner_pool, artifact, ["keras-cpu", "c", "c-fastmath"])
    assert_within_rounding(artifact, results, "c", "numpy-f64")
    assert_within_rounding(artifact, results, "c", "keras-cpu")
    # fast math reorders and fuses, within float32's reach on a correct model: no mismatch
    fast = verdicts(artifact, results, "c-fastmath", "numpy-f64")
    assert all(v != "mismatch" for layers in fast.values() for v in layers.values()), fast
    strict, loose = results["c"].environment, results["c-fastmath"].environment
    assert strict["flags"] == "-std=c99 -O2 -ffp-contract=off"
    assert loose["flags"] == "-std=c99 -O3 -ffast-math -march=native"
    version = subprocess.run(["cc", "--version"], capture_output=True, text=True, check=True)
    assert strict["compiler_version"] == version.stdout.splitlines()[0]
    assert strict["compiler"] == shutil.which("cc")
    assert loose["march_native"] not in ("", "unknown") and "march_native" not in strict


def many_layers(keras: Any) -> Any:
    """Every layer class the C port generates, channels_last, in one functional model."""
    L = keras.layers
    image = keras.Input((9, 9, 3), name="image")
    a = L.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv_same")(image)
    b = L.Conv2D(4, 3, dilation_rate=2, padding="valid", use_bias=False, name="conv_dil")(image)
    b = L.ZeroPadding2D(((1, 0), (0, 1)), name="pad")(b)
    b = L.MaxPooling2D(2, strides=1, padding="valid", name="maxpool")(b)
    b = L.AveragePooling2D(3, strides=1, padding="same", name="avgpool")(b)
    d = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, name="dw")(image)
    s = L.SeparableConv2D(4, 3, strides=2, padding="same", activation="tanh", name="sep")(image)
    merged = L.Add(name="add")([a, s])
    merged = L.Multiply(name="mul")([merged, L.Activation("sigmoid", name="act")(a)])
    merged = L.Concatenate(name="concat")([merged, d, L.Subtract(name="sub")([a, s])])
    merged = L.BatchNormalization(name="bn")(merged)
    merged = L.ReLU(max_value=6.0, name="relu6")(merged)
    merged = L.LeakyReLU(negative_slope=0.1, name="leaky")(merged)
    pooled = L.GlobalAveragePooling2D(name="gap")(merged)
    maxed = L.GlobalMaxPooling2D(name="gmp")(merged)
    joined = L.Average(name="avg")([pooled, maxed])
    joined = L.Maximum(name="max")([joined, L.Minimum(name="min")([pooled, maxed])])
    joined = L.Dropout(0.5, name="drop")(joined)
    x = L.Dense(12, activation="gelu", name="dense")(joined)
    x = L.Reshape((4, 3), name="reshape")(x)
    x = L.Conv1D(3, 2, padding="same", activation="elu", name="conv1d")(x)
    x = L.MaxPooling1D(2, padding="same", name="pool1d")(x)
    x = L.GlobalAveragePooling1D(name="gap1d")(x)
    x = L.Rescaling(0.5, offset=0.25, name="rescale")(x)
    x = L.Dense(5, activation="swish", name="dense2")(x)
    x = L.Dense(4, name="logits")(L.Flatten(name="flat")(x))
    return keras.Model(image, L.Softmax(name="softmax")(x))


def test_every_generated_layer_class_matches_keras(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    model = many_layers(keras)
    randomize_weights(model, seed=11)
    artifact = save_model(model)
    results = run(runner_pool, artifact, ["keras-cpu", "c"])
    assert_within_rounding(artifact, results, "c", "keras-cpu")
    assert_within_rounding(artifact, results, "c", "numpy-f64")


def test_channels_first_maps_match_keras_on_jax(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """TensorFlow cannot run channels_first convolutions on the CPU; Keras on JAX can.
    A softmax activation of a channels_first convolution runs along its last axis (the
    width), as Keras applies it in the layer's own layout: numpy and C both checked."""
    L = keras.layers
    first = {"data_format": "channels_first"}
    image = keras.Input((3, 12, 12), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1", **first)(image)
    x = L.BatchNormalization(axis=1, name="bn1")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, name="dw", **first)(x)
    x = L.SeparableConv2D(6, 3, padding="same", dilation_rate=2, name="sep", **first)(x)
    x = L.AveragePooling2D(2, strides=(1, 2), padding="same", name="avg", **first)(x)
    x = L.Conv2D(6, 3, strides=2, padding="same", activation="softmax", name="soft", **first)(x)
    x = L.MaxPooling2D(2, name="pool", **first)(x)
    x = L.ZeroPadding2D(1, name="pad", **first)(x)
    kept = L.GlobalAveragePooling2D(keepdims=True, name="gap", **first)(x)
    x = L.Conv2D(6, 2, padding="valid", activation="relu", name="conv3", **first)(x)
    x = L.Concatenate(axis=1, name="concat")(
        [L.Flatten(name="flat", **first)(x), L.Flatten(name="flat_gap")(kept)]
    )
    x = L.Reshape((6, 2), name="steps")(L.Dense(12, name="to_steps")(x))
    x = L.Conv1D(4, 3, strides=2, padding="same", activation="selu", name="conv1d", **first)(x)
    x = L.ZeroPadding1D((2, 1), name="pad1d")(x)
    x = L.MaxPooling1D(2, padding="same", name="pool1d", **first)(x)
    x = L.GlobalMaxPooling1D(name="gmp1d", **first)(x)
    model = keras.Model(image, L.Dense(10, activation="softmax", name="out")(x))
    randomize_weights(model, seed=4)
    artifact = save_model(model)
    results = run(runner_pool, artifact, ["keras-jax", "c", "numpy"])
    assert_within_rounding(artifact, results, "c", "keras-jax")
    assert_within_rounding(artifact, results, "numpy", "keras-jax")
    assert_within_rounding(artifact, results, "c", "numpy-f64")


def test_a_kernel_read_in_the_wrong_layout_is_a_mismatch_at_exactly_that_layer(
    example: Any, engine_options: EngineOptions, monkeypatch: Any
) -> None:
    """The port's second convolution reads its HWIO kernel as if it were OIHW."""
    artifact = example("cifar_cnn")
    convs = [layer.name for layer in artifact.graph.compute_layers if layer.class_name == "Conv2D"]
    broken = convs[1]
    honest = c_layers.GENERATORS["Conv2D"]

    def misread(layer: Any, shapes: Any, index: int) -> Any:
        code = honest(layer, shapes, index)
        if layer.name == broken:
            kernel = code.weights[0]
            code.weights[0] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
        return code

    monkeypatch.setitem(c_layers.GENERATORS, "Conv2D", misread)
    with RunnerPool(engine_options) as pool:  # its own builds: not the honest port's
        results = run(pool, artifact, ["c"])
    found = verdicts(artifact, results, "c", "numpy-f64")
    names = [layer.name for layer in artifact.graph.compute_layers]
    isolated = {layer for layer, v in found["isolated"].items() if v not in WITHIN_ROUNDING}
    assert isolated == {broken}, found["isolated"]
    assert found["isolated"][broken] == "mismatch"
    accumulated = found["accumulated"]
    assert all(accumulated[n] in WITHIN_ROUNDING for n in names[: names.index(broken)])
    assert accumulated[broken] == "mismatch"


def test_layer_names_with_c_syntax_never_reach_the_source(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    L = keras.layers
    # Keras refuses "/" in a name, so no "*/" or "//"; everything else C would read.
    hostile = ['x #include "passwd" *', 'a";system("touch pwned");{', "b\\\n}{"]
    inputs = keras.Input((4,), name="in_*")
    x = L.Dense(3, activation="relu", name=hostile[0])(inputs)
    x = L.Dense(3, name=hostile[1])(x)
    model = keras.Model(inputs, L.Activation("tanh", name=hostile[2])(x))
    randomize_weights(model, seed=2)
    artifact = save_model(model)
    assert {*hostile, "in_*"} <= {layer.name for layer in artifact.graph.layers}
    source = generate(artifact.graph).source
    for name in [*hostile, "in_*"]:
        assert name not in source
    assert "passwd" not in source and "system" not in source
    results = run(runner_pool, artifact, ["c"])
    assert_within_rounding(artifact, results, "c", "numpy-f64")


def test_an_unsupported_layer_is_named_and_the_other_backends_still_run(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    L = keras.layers
    model = keras.Sequential(
        [keras.Input((5, 3)), L.LSTM(4, name="memory"), L.Dense(2, name="head")]
    )
    artifact = save_model(model)
    inputs = generate_inputs(InputRecipe("ones", batch=2), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool, artifact, inputs, backends=["c", "numpy"], reference="numpy-f64"
    )
    assert results["c"].status == "unsupported"
    assert results["c"].reason == "unsupported: memory (LSTM)"
    assert results["numpy"].status == "done"


def fake_compiler(directory: Path, script: str) -> str:
    path = directory / "fake-cc"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.mark.parametrize(
    ("script", "limit_s", "expected"),
    [
        ('echo "port.c:3: error: expected ; before }" >&2; exit 1', 30.0, "expected ; before }"),
        ("sleep 5", 0.5, "did not finish within 0.5 s"),
    ],
)
def test_a_compiler_error_or_time_out_fails_the_backend_with_its_message(
    script: str,
    limit_s: float,
    expected: str,
    example: Any,
    engine_options: EngineOptions,
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    options = replace(
        engine_options,
        c_compiler=fake_compiler(tmp_path, f"echo call >> {calls}; {script}"),
        c_compile_timeout_s=limit_s,
    )
    artifact = example("dense10x50")
    inputs = generate_inputs(InputRecipe("ones", batch=1), artifact.graph.input_shapes)
    with RunnerPool(options) as pool:
        results = run_locally(pool, artifact, inputs, backends=["c"], reference="numpy-f64")
        again = run_locally(pool, artifact, inputs, backends=["c"], reference="numpy-f64")
    assert results["c"].status == "failed"
    assert expected in results["c"].reason
    assert again["c"].reason == results["c"].reason
    assert calls.read_text().count("call") == 1  # the failed build was not tried again


def test_the_activations_and_a_model_of_two_inputs(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """Each generated activation after a Dense layer, and two inputs (their offsets in
    the inputs file), against Keras."""
    L = keras.layers
    names = ["relu6", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "hard_sigmoid"]
    names += ["hard_silu", "tanh", "softplus", "softsign", "silu", "mish", "exponential"]
    left, right = keras.Input((6,), name="left"), keras.Input((4,), name="right")
    x = L.Concatenate(name="both")([left, right])
    for name in names:
        x = L.Dense(6, activation=name, name=f"dense_{name}")(x)
    x = L.ReLU(max_value=0.5, negative_slope=0.1, threshold=0.2, name="relu_options")(x)
    model = keras.Model([left, right], L.Dense(3, name="out")(x))
    randomize_weights(model, seed=9)
    artifact = save_model(model)
    results = run(runner_pool, artifact, ["keras-cpu", "c"])
    assert_within_rounding(artifact, results, "c", "keras-cpu")
    assert_within_rounding(artifact, results, "c", "numpy-f64")


def test_options_the_port_lacks_are_refused_naming_them(keras: Any, save_model: Any) -> None:
    L = keras.layers
    refused = {
        "unsupported: grouped (Conv2D) groups=2": L.Conv2D(4, 3, groups=2, name="grouped"),
        "unsupported: causal (Conv1D) padding 'causal'": L.Conv1D(
            4, 3, padding="causal", name="causal"
        ),
    }
    for reason, layer in refused.items():
        shape = (6, 4) if "Conv1D" in reason else (6, 6, 4)
        artifact = save_model(keras.Sequential([keras.Input(shape), layer]), name=layer.name)
        assert port_problem(artifact.graph) == reason
