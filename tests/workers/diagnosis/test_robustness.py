"""Diagnosis never takes a comparison down: layer configs beyond the hypothesis cases,
a port that left layers out, a channels_first flatten, and the time budget."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.support import randomize_weights
from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.diagnosis.diagnose import Budget, diagnose_outputs
from workers.diagnosis.runs import run_diagnoser
from workers.engine.options import EngineOptions

WITHIN_ROUNDING = ("identical", "rounding")


def reference_of(artifact: Any, runner_pool: RunnerPool, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    inputs = {
        name: rng.normal(0.0, 1.0, (3, *shape[1:])).astype(np.float32)
        for name, shape in artifact.graph.input_shapes.items()
    }
    results = run_locally(runner_pool, artifact, inputs, backends=["numpy"], reference="numpy-f64")
    return inputs, results


def test_unusual_layer_configs_are_diagnosed_without_failing(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """Strides, dilation, depth multipliers, groups, causal Conv1D, a softmax over two
    axes, same-padded pooling: 20% noise on every layer is unexplained everywhere, and
    every layer gets its diagnosis (no cause crashed it)."""
    L = keras.layers
    image = keras.Input((8, 8, 3), name="x")
    strided = L.Conv2D(4, 3, strides=2, padding="same", name="strided")(image)
    outputs = [
        L.Softmax(axis=[1, 2], name="softmax_axes")(strided),
        L.Activation("hard_sigmoid", name="hard")(
            L.Conv2D(4, 3, dilation_rate=2, padding="same", name="dilated")(image)
        ),
        L.MaxPooling2D(3, strides=2, padding="same", name="maxpool")(
            L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(image)
        ),
        L.AveragePooling2D(2, padding="same", name="avgpool")(
            L.SeparableConv2D(4, 3, name="separable")(image)
        ),
        L.Conv2D(6, 3, groups=3, padding="same", name="grouped")(image),
        L.Conv1D(4, 3, padding="causal", name="causal")(L.Reshape((64, 3), name="seq")(image)),
    ]
    model = keras.Model(image, outputs)
    randomize_weights(model, seed=5)
    artifact = save_model(model)
    inputs, results = reference_of(artifact, runner_pool, seed=2)
    rng = np.random.default_rng(4)
    candidate = {
        name: (y * (1 + 0.2 * rng.normal(size=y.shape))).astype(np.float32)
        for name, y in results["numpy"].outputs["accumulated"].items()
    }
    fed = {**inputs, **results["numpy-f64"].outputs["accumulated"]}
    found = diagnose_outputs(artifact.graph, candidate, fed, mode="accumulated", budget=Budget(60))
    assert set(found) == {layer.name for layer in artifact.graph.compute_layers}
    noisy = {name: d for name, d in found.items() if d.local_verdict not in WITHIN_ROUNDING}
    assert set(noisy) >= {"strided", "dilated", "depthwise", "separable", "grouped", "causal"}
    for name, diagnosed in noisy.items():
        assert diagnosed.diagnosis is not None, name
        assert diagnosed.explained_by == "unexplained", (name, diagnosed.diagnosis)
    tested = {e.hypothesis for e in found["depthwise"].diagnosis or ()}
    assert {"conv-kernel-layout", "kernel-flipped", "padding-same-vs-valid"} <= tested
    assert "softmax-axis" in {e.hypothesis for e in found["softmax_axes"].diagnosis or ()}


def test_a_channels_first_flatten_in_buffer_order_and_a_port_missing_layers(
    keras: Any, tf: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """Keras flattens a channels_first map in channels-last order; a port that flattens its
    NCHW buffer as it lies is flatten-order. A port that left a float layer out: the layer
    it feeds is not diagnosed (its input is unknown), the others are."""
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((4, 3, 3), name="x"),
            L.Dense(3, name="mix"),
            L.Flatten(data_format="channels_first", name="flat"),
            L.Dense(5, name="out"),
            L.Dense(2, name="last"),
        ]
    )
    randomize_weights(model, seed=12)
    artifact = save_model(model)
    inputs, results = reference_of(artifact, runner_pool, seed=3)
    mix = np.asarray(model.get_layer("mix")(inputs["x"]), np.float32)
    flat = np.asarray(tf.reshape(mix, (mix.shape[0], -1)))  # the buffer as it lies
    out = np.asarray(model.get_layer("out")(flat), np.float32)
    last = np.asarray(model.get_layer("last")(out), np.float32)
    fed = {**inputs, **results["numpy-f64"].outputs["accumulated"]}
    port = {"mix": mix, "flat": flat, "out": out, "last": last}
    found = diagnose_outputs(artifact.graph, port, fed, mode="accumulated", budget=Budget(60))
    assert found["flat"].explained_by == "flatten-order", found["flat"].diagnosis
    assert [found[n].explained_by for n in ("mix", "out", "last")] == [None, None, None]

    partial = {"mix": mix, "last": last}
    found = diagnose_outputs(artifact.graph, partial, fed, mode="accumulated", budget=Budget(60))
    assert set(found) == {"mix"}


def test_the_budget_bounds_the_diagnosis(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3, name="d")])
    randomize_weights(model, seed=1)
    artifact = save_model(model)
    inputs, results = reference_of(artifact, runner_pool, seed=1)
    fed = {**inputs, **results["numpy-f64"].outputs["accumulated"]}
    candidate = results["numpy"].outputs["accumulated"]
    assert (
        diagnose_outputs(artifact.graph, candidate, fed, mode="accumulated", budget=Budget(0)) == {}
    )
    off = EngineOptions(diagnosis_budget_s=0)
    assert run_diagnoser(artifact.graph, inputs, results, fed_from="numpy-f64", options=off) is None
    on = run_diagnoser(
        artifact.graph, inputs, results, fed_from="numpy-f64", options=EngineOptions()
    )
    assert on is not None and on("numpy", "accumulated")["d"].local_verdict in WITHIN_ROUNDING
