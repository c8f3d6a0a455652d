"""Running backends and comparing them: real weight-layout bugs are told apart from
rounding, at the right layer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import randomize_weights
from workers.backends.execution import run_backend, run_locally
from workers.backends.pool import RunnerPool
from workers.backends.registry import UnknownBackend
from workers.engine.compare import compare
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.loading import ModelArtifact, load_artifact
from workers.engine.metrics import VerdictThresholds
from workers.engine.options import EngineOptions
from workers.engine.results import MODES, layer_inputs_from

WITHIN_ROUNDING = {"identical", "rounding"}


def small_cnn(keras: Any) -> Any:
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3), name="image"),
            L.Conv2D(4, 3, padding="same", activation="relu", name="conv_a"),
            L.Conv2D(5, 3, activation="relu", name="conv_b"),
            L.Flatten(name="flat"),
            L.Dense(16, activation="relu", name="fc_a"),
            L.Dense(16, name="fc_b"),
            L.Dense(3, activation="softmax", name="probs"),
        ]
    )
    randomize_weights(model, seed=11)
    return model


def conv_kernel_read_as_channels_first(kernel: np.ndarray) -> np.ndarray:
    """The classic port bug: HWIO bytes taken for PyTorch's OIHW, then 'converted' to HWIO."""
    h, w, i, o = kernel.shape
    return kernel.reshape(o, i, h, w).transpose(2, 3, 1, 0)


def verdicts_by_mode(graph: Any, results: dict[str, Any], backend: str) -> dict[str, list[str]]:
    comparisons = compare(
        graph,
        results,
        against="numpy-f64",
        modes=MODES,
        options=EngineOptions(thresholds=VerdictThresholds(), histogram_bins=11),
    )
    return {
        c.mode: [row.divergence.verdict for row in c.layers]
        for c in comparisons
        if c.backend == backend
    }


def test_conv_kernel_read_as_channels_first_is_a_mismatch_at_that_layer(
    keras: Any, save_model: Any, tmp_path: Path, runner_pool: RunnerPool
) -> None:
    model = small_cnn(keras)
    good = save_model(model, "good")
    bad_layer = model.get_layer("conv_b")
    kernel, bias = bad_layer.get_weights()
    bad_layer.set_weights([conv_kernel_read_as_channels_first(kernel), bias])
    model.save(tmp_path / "bad.keras")
    bad = load_artifact(tmp_path / "bad.keras")
    inputs = generate_inputs(InputRecipe("uniform", batch=4, seed=1), good.graph.input_shapes)
    results = run_locally(runner_pool, good, inputs, backends=[], reference="numpy-f64")
    feed = layer_inputs_from(good.graph, inputs, results["numpy-f64"].outputs["accumulated"])
    results["keras-cpu"] = run_backend(
        runner_pool, "keras-cpu", bad, inputs, modes=MODES, repeats=1, reference_feed=feed
    )
    verdicts = verdicts_by_mode(good.graph, results, "keras-cpu")
    names = [layer.name for layer in good.graph.compute_layers]
    corrupted = names.index("conv_b")
    assert set(verdicts["accumulated"][:corrupted]) <= WITHIN_ROUNDING
    assert verdicts["accumulated"][corrupted] == "mismatch"
    # Isolated mode feeds each layer the reference's input: only the bad layer is wrong.
    isolated = verdicts["isolated"]
    assert isolated[corrupted] == "mismatch"
    assert set(isolated[:corrupted] + isolated[corrupted + 1 :]) <= WITHIN_ROUNDING
    comparison = compare(good.graph, results, against="numpy-f64")[0]
    assert comparison.drift_start is not None and comparison.drift_start.layer == "conv_b"


def test_transposed_dense_kernel_in_a_port_is_a_mismatch_at_that_layer(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    good = save_model(small_cnn(keras))
    graph = good.graph
    broken_layers = [
        replace(layer, weights={**layer.weights, "kernel": layer.weights["kernel"].T.copy()})
        if layer.name == "fc_b"
        else layer
        for layer in graph.layers
    ]
    bad = ModelArtifact(
        path=good.path, sha256="transposed", graph=replace(graph, layers=broken_layers)
    )
    inputs = generate_inputs(InputRecipe("normal", batch=4, seed=2), graph.input_shapes)
    results = run_locally(runner_pool, good, inputs, backends=[], reference="numpy-f64")
    feed = layer_inputs_from(graph, inputs, results["numpy-f64"].outputs["accumulated"])
    results["numpy"] = run_backend(
        runner_pool, "numpy", bad, inputs, modes=MODES, repeats=1, reference_feed=feed
    )
    verdicts = verdicts_by_mode(graph, results, "numpy")
    names = [layer.name for layer in graph.compute_layers]
    corrupted = names.index("fc_b")
    assert set(verdicts["accumulated"][:corrupted]) <= WITHIN_ROUNDING
    assert verdicts["accumulated"][corrupted] == "mismatch"
    assert verdicts["isolated"][corrupted + 1] in WITHIN_ROUNDING


def test_unsupported_layer_stops_only_the_numpy_backends(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.UnitNormalization(name="unit"),
            keras.layers.Dense(2),
        ]
    )
    artifact = save_model(model)
    inputs = generate_inputs(InputRecipe("ones", batch=2), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool, artifact, inputs, backends=["keras-cpu", "numpy"], reference="numpy-f64"
    )
    assert results["numpy-f64"].status == "unsupported"
    assert results["numpy"].reason == "unsupported: unit (UnitNormalization)"
    assert results["keras-cpu"].status == "done"
    assert results["keras-cpu"].outputs["accumulated"]["unit"].shape == (2, 5, 3)
    isolated = run_locally(
        runner_pool, artifact, inputs, backends=["keras-cpu"], reference="numpy-f64", modes=MODES
    )["keras-cpu"]
    assert isolated.status == "done" and "reference did not run" in isolated.reason
    assert list(isolated.outputs) == ["accumulated"]


def test_repeats_report_determinism(keras: Any, save_model: Any, runner_pool: RunnerPool) -> None:
    artifact = save_model(small_cnn(keras))
    inputs = generate_inputs(InputRecipe("uniform", batch=3, seed=4), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool,
        artifact,
        inputs,
        backends=["keras-cpu", "numpy"],
        reference="numpy-f64",
        repeats=3,
    )
    for backend in ("keras-cpu", "numpy", "numpy-f64"):
        assert results[backend].deterministic is True
        assert results[backend].repeat_spread == 0.0
    single = run_locally(runner_pool, artifact, inputs, backends=["numpy"], reference="numpy-f64")
    assert single["numpy"].deterministic is None


def test_keras_cpu_records_its_numeric_environment(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    artifact = save_model(small_cnn(keras))
    inputs = generate_inputs(InputRecipe("ones", batch=1), artifact.graph.input_shapes)
    result = run_locally(
        runner_pool, artifact, inputs, backends=["keras-cpu"], reference="numpy-f64"
    )
    environment = result["keras-cpu"].environment
    assert environment["tensorflow"] == __import__("tensorflow").__version__
    assert environment["keras_backend"] == "tensorflow"
    assert isinstance(environment["onednn"], bool)
    assert result["numpy-f64"].environment["dtype"] == "float64"


def test_unknown_backend_lists_the_valid_ones(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    artifact = save_model(small_cnn(keras))
    inputs = generate_inputs(InputRecipe("ones"), artifact.graph.input_shapes)
    listed = r"unknown backend 'tfjs-gpu'; valid backends: keras-cpu"
    with pytest.raises(UnknownBackend, match=listed):
        run_locally(runner_pool, artifact, inputs, backends=["tfjs-gpu"], reference="numpy-f64")


@pytest.mark.parametrize("batch_values", [1, 1000, 2**20])
def test_each_row_measures_its_own_layer_however_layers_are_batched(
    keras: Any,
    save_model: Any,
    runner_pool: RunnerPool,
    monkeypatch: pytest.MonkeyPatch,
    batch_values: int,
) -> None:
    """Layers are measured in batches (one at a time, a few, all): each row's size and
    largest error are its own layer's, worked out here with plain numpy."""
    monkeypatch.setattr("workers.engine.compare.BATCH_VALUES", batch_values)
    good = save_model(small_cnn(keras))
    inputs = generate_inputs(InputRecipe("normal", batch=3, seed=4), good.graph.input_shapes)
    results = run_locally(
        runner_pool, good, inputs, backends=["keras-cpu", "numpy"], reference="numpy-f64"
    )
    [keras_rows, numpy_rows] = compare(good.graph, results, against="numpy-f64")
    for comparison in (keras_rows, numpy_rows):
        ours = results[comparison.backend].outputs["accumulated"]
        reference = results["numpy-f64"].outputs["accumulated"]
        assert [row.layer for row in comparison.layers] == [
            layer.name for layer in good.graph.compute_layers
        ]
        for row in comparison.layers:
            errors = ours[row.layer].astype(np.float64) - reference[row.layer]
            assert row.divergence.n == errors.size
            assert row.divergence.max_abs == np.abs(errors).max()
