"""The TFLite backends for real: TensorFlow's converter, the LiteRT interpreter, the
float64 numpy port as the reference. float32 TFLite is within rounding on every layer;
the float16 and int8 forms drift but never 'mismatch' on a correct model (their layers
stay within their precision); one corrupted weight in the model the int8 backend
converts is a 'mismatch' at exactly that layer."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np
import pytest

from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.backends.tflite.runner import TfliteInt8Runner
from workers.diagnosis.runs import run_diagnoser
from workers.engine.compare import Comparison, compare
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.loading import ModelArtifact
from workers.engine.options import EngineOptions
from workers.engine.results import MODES, BackendResult, layer_inputs_from
from workers.engine.status import BackendStatus

TFLITE = ("tflite", "tflite-f16", "tflite-dynamic", "tflite-int8")


def compared(
    artifact: ModelArtifact,
    inputs: dict[str, np.ndarray],
    results: dict[str, BackendResult],
    options: EngineOptions,
) -> list[Comparison]:
    diagnose = run_diagnoser(artifact.graph, inputs, results, fed_from="numpy-f64", options=options)
    return compare(artifact.graph, results, against="numpy-f64", modes=MODES, diagnose=diagnose)


def verdicts(comparison: Comparison) -> dict[str, str]:
    return {row.layer: row.divergence.verdict for row in comparison.layers}


@pytest.mark.parametrize("name", ["dense10x50", "cifar_cnn"])
def test_examples_on_every_tflite_form(
    name: str, example: Any, runner_pool: RunnerPool, engine_options: EngineOptions
) -> None:
    artifact = example(name)
    inputs = generate_inputs(InputRecipe("uniform", batch=8, seed=3), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool,
        artifact,
        inputs,
        backends=list(TFLITE),
        reference="numpy-f64",
        modes=MODES,
        repeats=2,
    )
    for backend in TFLITE:
        assert results[backend].status == "done", (backend, results[backend].reason)
        assert results[backend].deterministic is True, backend
    comparisons = compared(artifact, inputs, results, engine_options)
    assert {(c.backend, c.mode) for c in comparisons} == {(b, m) for b in TFLITE for m in MODES}
    finals = artifact.graph.outputs
    for comparison in comparisons:
        assert len(comparison.layers) == len(artifact.graph.compute_layers)
        found = verdicts(comparison)
        if comparison.backend == "tflite":
            assert set(found.values()) <= {"identical", "rounding"}, found
        else:
            assert "mismatch" not in found.values(), (comparison.backend, comparison.mode, found)
            assert "nonfinite" not in found.values()
    # float16 weights move every layer with weights beyond float32 rounding, and the
    # diagnosis names the cause from TFLite's own numbers.
    f16 = next(c for c in comparisons if (c.backend, c.mode) == ("tflite-f16", "isolated"))
    weighted = [row for row in f16.layers if artifact.graph.layer(row.layer).weights]
    assert weighted and all(row.divergence.verdict == "reduced-precision" for row in weighted)
    assert {row.explained_by for row in weighted} == {"float16-weights"}
    # Dynamic range: the layers whose weights it stores in int8 are explained from
    # TFLite's own numbers (int8 weights, inputs quantized per sample on the fly).
    dynamic = next(c for c in comparisons if (c.backend, c.mode) == ("tflite-dynamic", "isolated"))
    drifting = [row for row in dynamic.layers if row.divergence.verdict == "reduced-precision"]
    assert {row.explained_by for row in drifting} == {"int8-quantization"}
    assert {row.layer for row in drifting} == {
        layer.name
        for layer in artifact.graph.compute_layers
        if layer.weights and layer.weights["kernel"].size >= 1024
    }
    # int8: every layer beyond rounding in its own precision, and the backend's output
    # scales are what the model dequantizes with.
    int8 = next(c for c in comparisons if (c.backend, c.mode) == ("tflite-int8", "accumulated"))
    assert all(row.local is not None and row.local.precision_bound for row in int8.layers)
    environment = results["tflite-int8"].environment
    scales = environment["quantization"]["layer_output_scales"]
    assert set(scales["accumulated"]) == {layer.name for layer in artifact.graph.compute_layers}
    for layer, (scale, zero_point) in scales["accumulated"].items():
        values = results["tflite-int8"].outputs["accumulated"][layer].astype(np.float64)
        steps = values / scale + zero_point
        assert np.allclose(steps, np.round(steps), atol=1e-3), layer
    for backend in TFLITE:
        environment = results[backend].environment
        assert metadata.version("ai-edge-litert") in environment["interpreter"]
        assert metadata.version("tensorflow") in environment["converter"]
        assert set(environment["capture_perturbation"]) == set(finals)


def test_a_corrupted_weight_in_the_int8_model_is_a_mismatch_at_that_layer(
    example: Any, runner_pool: RunnerPool, engine_options: EngineOptions
) -> None:
    """One kernel entry of conv2d_3 set to ten times the layer's largest weight before the
    int8 conversion (the reference keeps the model as uploaded): every layer after it is
    fed the wrong values but computes them correctly, so only conv2d_3 is a mismatch."""

    class CorruptedInt8(TfliteInt8Runner):
        def _capture(self, model: ModelArtifact) -> tuple[Any, Any]:
            keras_model, capture = super()._capture(model)
            layer = keras_model.get_layer("conv2d_3")
            kernel = np.array(layer.kernel)
            kernel[1, 1, 0, 5] = 10.0 * np.abs(kernel).max()
            layer.kernel.assign(kernel)
            return keras_model, capture

    artifact = example("cifar_cnn")
    inputs = generate_inputs(InputRecipe("uniform", batch=8, seed=3), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool, artifact, inputs, backends=[], reference="numpy-f64", modes=MODES
    )
    with CorruptedInt8(engine_options) as runner:
        result = BackendResult(backend="tflite-int8", status=BackendStatus.DONE)
        result.outputs["accumulated"] = runner.run(artifact, inputs)
        result.outputs["isolated"] = runner.run_isolated(
            artifact,
            layer_inputs_from(artifact.graph, inputs, results["numpy-f64"].outputs["accumulated"]),
        )
        result.environment = runner.environment()
    results["tflite-int8"] = result
    for comparison in compared(artifact, inputs, results, engine_options):
        found = verdicts(comparison)
        assert [layer for layer, v in found.items() if v == "mismatch"] == ["conv2d_3"], (
            comparison.mode,
            found,
        )
