"""The rounding envelope: correct backends raise no alarm, on the examples and on a dot
product whose rounding error a fixed rel_l2 threshold would take for a bug; a dense
layer's envelope is the documented formula, worked by hand; the compiled kernels give
numpy's arithmetic to the last bit."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.diagnosis import envelope, envelope_kernels
from workers.diagnosis.diagnose import Budget, diagnose_outputs
from workers.diagnosis.envelope import rounding_envelope
from workers.engine.examples import EXAMPLES
from workers.engine.graph import LayerSpec
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.loading import ModelArtifact
from workers.engine.metrics import DEFAULT_THRESHOLDS
from workers.engine.results import MODES

CORRECT_BACKENDS = ("keras-cpu", "numpy")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_correct_backends_get_no_false_alarm(
    name: str, example: Callable[[str], ModelArtifact], runner_pool: RunnerPool
) -> None:
    artifact = example(name)
    inputs = generate_inputs(InputRecipe("uniform", batch=8, seed=1), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool,
        artifact,
        inputs,
        backends=CORRECT_BACKENDS,
        reference="numpy-f64",
        modes=MODES,
    )
    fed = {**inputs, **results["numpy-f64"].outputs["accumulated"]}
    layers = {layer.name for layer in artifact.graph.compute_layers}
    for backend in CORRECT_BACKENDS:
        for mode in MODES:
            found = diagnose_outputs(
                artifact.graph, results[backend].outputs[mode], fed, mode=mode, budget=Budget(60)
            )
            assert set(found) == layers, (backend, mode)
            for layer, diagnosis in found.items():
                where = (backend, mode, layer, diagnosis)
                assert diagnosis.local_verdict in ("identical", "rounding"), where
                assert diagnosis.local_rel_l2 <= diagnosis.local_bound, where
                assert diagnosis.diagnosis == () and diagnosis.explained_by is None, where


def test_a_cancelling_dot_product_is_rounding_not_a_bug(
    keras: Any, save_model: Callable[..., ModelArtifact], runner_pool: RunnerPool
) -> None:
    """A 512-term dot product of terms near 1 that cancels to at most 2.8e-3: keras-cpu's
    float32 sum is off by rel_l2 2.9e-3 of that small result (290 times the fixed 1e-5
    threshold), yet well within what float32 rounding of 512 terms can do (the envelope
    allows 0.29)."""
    rng = np.random.default_rng(5)
    inputs = rng.normal(0.0, 1.0, (4, 512)).astype(np.float32)
    # Columns orthogonal to the four inputs, plus a small part that does not cancel.
    x = inputs.astype(np.float64)
    weights = rng.normal(0.0, 1.0, (512, 3))
    weights -= x.T @ np.linalg.solve(x @ x.T, x @ weights)
    weights += 1e-4 * rng.normal(0.0, 1.0, (512, 3))
    model = keras.Sequential([keras.Input((512,), name="x"), keras.layers.Dense(3, name="dot")])
    model.get_layer("dot").set_weights([weights.astype(np.float32), np.zeros(3, np.float32)])
    artifact = save_model(model)
    results = run_locally(
        runner_pool, artifact, {"x": inputs}, backends=["keras-cpu"], reference="numpy-f64"
    )
    fed = {"x": inputs, **results["numpy-f64"].outputs["accumulated"]}
    found = diagnose_outputs(
        artifact.graph,
        results["keras-cpu"].outputs["accumulated"],
        fed,
        mode="accumulated",
        budget=Budget(60),
    )["dot"]
    assert found.local_rel_l2 > 10 * DEFAULT_THRESHOLDS.rounding
    assert found.local_verdict == "rounding"
    assert found.explained_by is None


def _dense(activation: str, kernel: np.ndarray, bias: np.ndarray) -> LayerSpec:
    config = {"units": kernel.shape[1], "activation": activation, "use_bias": True}
    weights = {"kernel": kernel, "bias": bias}
    return LayerSpec("dense", "Dense", config, weights, ["x"], (None, kernel.shape[1]))


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_a_dense_layers_envelope_is_the_documented_formula(activation: str) -> None:
    """Worked element by element in Python floats from envelope.py's docstring: tau =
    sqrt(K) u M carried through the activation, plus 4 u |y| and 2 u max|y| (max over
    the finite values); a row with a NaN input is NaN and leaves the others' scale
    alone. The second row's first output is exactly 0, where ReLU's kink lets the whole
    bound through."""
    x = np.array([[1.5, -2.0], [1.0, 1.0], [0.25, np.nan]])
    kernel = np.array([[0.5, -1.0, 0.75], [-0.5, 2.0, -3.0]], np.float32)
    bias = np.array([0.0, -0.25, 0.125], np.float32)
    unit = 2.0**-24
    y, tau = rounding_envelope(_dense(activation, kernel, bias), [x], unit, 1e-5)

    def relu(value: float) -> float:
        return value if value >= 0.0 or math.isnan(value) else 0.0

    act = relu if activation == "relu" else (lambda value: value)
    rows, units = len(x), kernel.shape[1]
    z = [
        [
            sum(x[i, k] * float(kernel[k, j]) for k in range(2)) + float(bias[j])
            for j in range(units)
        ]
        for i in range(rows)
    ]
    m = [
        [
            sum(abs(x[i, k]) * abs(float(kernel[k, j])) for k in range(2)) + abs(float(bias[j]))
            for j in range(units)
        ]
        for i in range(rows)
    ]
    expected_y = [[act(z[i][j]) for j in range(units)] for i in range(rows)]
    scale = max(abs(v) for row in expected_y for v in row if math.isfinite(v))
    expected = np.empty((rows, units))
    for i in range(rows):
        for j in range(units):
            t = math.sqrt(2) * unit * m[i][j]
            if activation == "relu":
                moved = [abs(relu(z[i][j] + s * t) - expected_y[i][j]) for s in (1, -1)]
                t = 0.0 if any(map(math.isnan, moved)) else max(moved)
            expected[i, j] = (4 * abs(expected_y[i][j]) + 2 * scale) * unit + t
    assert expected_y[1][0] == 0.0 and z[1][0] == 0.0
    np.testing.assert_allclose(y, expected_y, rtol=1e-15, equal_nan=True)
    np.testing.assert_allclose(tau, expected, rtol=1e-6, equal_nan=True)
    assert np.isnan(tau[2]).all() and np.isfinite(tau[:2]).all()


def test_the_compiled_envelope_is_numpys_to_the_last_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled kernels against the numpy arithmetic they replace (still used for
    every other activation), on a convolution and a dense layer, with NaN, infinities,
    values near float64's overflow and float32's underflow among the inputs; and the
    ReLU on -0.0, which numpy makes +0.0."""
    rng = np.random.default_rng(11)
    conv = LayerSpec(
        "conv",
        "Conv2D",
        {
            "filters": 4,
            "kernel_size": [3, 3],
            "strides": [1, 1],
            "padding": "same",
            "dilation_rate": [1, 1],
            "data_format": "channels_last",
            "groups": 1,
            "use_bias": True,
            "activation": "relu",
        },
        {
            "kernel": rng.normal(size=(3, 3, 3, 4)).astype(np.float32),
            "bias": rng.normal(size=4).astype(np.float32),
        },
        ["x"],
        (None, 6, 6, 4),
    )
    dense = _dense(
        "relu", rng.normal(size=(5, 7)).astype(np.float32), rng.normal(size=7).astype(np.float32)
    )
    odd = rng.normal(size=(16, 5))
    odd[0, 0], odd[1, 1], odd[2, 2], odd[3], odd[4], odd[5] = (
        np.nan,
        np.inf,
        -np.inf,
        1e300,
        0,
        1e-40,
    )
    cases = [
        (conv, [rng.normal(size=(2, 6, 6, 3))]),
        (dense, [rng.normal(size=(16, 5))]),
        (dense, [odd]),
    ]
    for layer, inputs in cases:
        for activation in ("relu", "linear"):
            spec = dataclasses.replace(layer, config={**layer.config, "activation": activation})
            with np.errstate(all="ignore"):
                compiled = rounding_envelope(spec, inputs, 2.0**-24, 1e-5)
                monkeypatch.setattr(envelope, "COMPILED_ACTIVATIONS", frozenset())
                plain = rounding_envelope(spec, inputs, 2.0**-24, 1e-5)
                monkeypatch.undo()
            for ours, numpys in zip(compiled, plain, strict=True):
                assert ours.shape == numpys.shape
                same_bits = np.ascontiguousarray(numpys).view(np.uint64) == ours.view(np.uint64)
                assert (same_bits | (np.isnan(ours) & np.isnan(numpys))).all(), (
                    spec.class_name,
                    activation,
                )
    # A pre-activation of -0.0 (an Add of two -0.0, say): numpy's ReLU makes it +0.0.
    z = np.array([-0.0, 0.0, -1.0, 2.5, np.nan, -np.inf, np.inf])
    y = np.empty_like(z)
    assert envelope_kernels.activated(z, True, y) == 2.5
    assert np.array_equal(y.view(np.uint64), np.maximum(z, 0.0).view(np.uint64))
