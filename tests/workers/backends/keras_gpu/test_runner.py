"""keras-gpu without a GPU: 'skipped' with the reason, and the whole runner path on the CPU
through the test-only setting (the real GPU path is exercised on the device machine)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.support import randomize_weights
from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.engine.compare import compare
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.options import EngineOptions
from workers.engine.results import MODES

WITHIN_ROUNDING = {"identical", "rounding"}


@pytest.fixture
def conv_model(keras: Any, save_model: Any) -> Any:
    L = keras.layers
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2), name="image"),
            L.Conv2D(3, 3, padding="same", activation="relu", name="conv"),
            L.Flatten(name="flat"),
            L.Dense(5, activation="tanh", name="fc"),
        ]
    )
    randomize_weights(model, seed=6)
    return save_model(model)


def test_no_gpu_means_skipped_with_the_framework_named(
    conv_model: Any, runner_pool: RunnerPool
) -> None:
    inputs = generate_inputs(InputRecipe("ones"), conv_model.graph.input_shapes)
    results = run_locally(
        runner_pool,
        conv_model,
        inputs,
        backends=["keras-gpu", "keras-gpu-fp32", "numpy"],
        reference="numpy-f64",
    )
    for backend in ("keras-gpu", "keras-gpu-fp32"):
        assert results[backend].status == "skipped"
        # jax is installed for keras-jax: both frameworks were asked for a GPU.
        assert results[backend].reason == "no GPU visible to tensorflow, jax"
        assert results[backend].outputs == {}
    assert results["numpy"].status == "done"


def test_framework_that_is_not_installed_is_named(
    conv_model: Any, engine_options: EngineOptions
) -> None:
    inputs = generate_inputs(InputRecipe("ones"), conv_model.graph.input_shapes)
    with RunnerPool(replace(engine_options, gpu_framework="torch")) as pool:
        result = run_locally(pool, conv_model, inputs, backends=["keras-gpu"], reference="numpy")
    assert result["keras-gpu"].status == "skipped"
    assert result["keras-gpu"].reason == "torch is not installed"


def test_runner_path_on_the_cpu_in_test_mode(
    conv_model: Any, engine_options: EngineOptions
) -> None:
    inputs = generate_inputs(InputRecipe("uniform", batch=4, seed=2), conv_model.graph.input_shapes)
    with RunnerPool(replace(engine_options, gpu_allow_cpu_for_tests=True)) as pool:
        results = run_locally(
            pool,
            conv_model,
            inputs,
            backends=["keras-gpu", "keras-gpu-fp32"],
            reference="numpy-f64",
            modes=MODES,
            repeats=2,
        )
    for backend in ("keras-gpu", "keras-gpu-fp32"):
        result = results[backend]
        assert result.status == "done", result.reason
        assert result.deterministic is True
        assert set(result.outputs) == {"accumulated", "isolated"}
        environment = result.environment
        assert environment["framework"] == "tensorflow"
        assert environment["device"].endswith("test mode")
        assert environment["tensorflow"] == __import__("tensorflow").__version__
    assert results["keras-gpu-fp32"].environment["tf32_enabled"] is False
    assert results["keras-gpu-fp32"].environment["precision"] == "fp32 (TF32 off)"
    assert results["keras-gpu"].environment["precision"] == "framework default"
    for comparison in compare(conv_model.graph, results, against="numpy-f64", modes=MODES):
        verdicts = {row.divergence.verdict for row in comparison.layers}
        assert verdicts <= WITHIN_ROUNDING, (comparison.backend, comparison.mode, verdicts)
