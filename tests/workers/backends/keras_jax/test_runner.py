"""keras-jax: Keras 3 on JAX on the CPU, in the keras-gpu child process code, for real:
within rounding of the float64 reference on every layer, both modes, repeats; and on
channels_first convolutions, which TensorFlow cannot run on the CPU, the independent
check of the numpy port."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import randomize_weights
from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.engine.compare import compare
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.results import MODES

WITHIN_ROUNDING = {"identical", "rounding"}


def within_rounding(artifact: Any, results: dict[str, Any], backends: tuple[str, ...]) -> None:
    comparisons = compare(artifact.graph, results, against="numpy-f64", modes=MODES)
    assert {(c.backend, c.mode) for c in comparisons} == {(b, m) for b in backends for m in MODES}
    for comparison in comparisons:
        assert len(comparison.layers) == len(artifact.graph.compute_layers)
        bad = {
            row.layer: (row.divergence.verdict, row.divergence.rel_l2)
            for row in comparison.layers
            if row.divergence.verdict not in WITHIN_ROUNDING
        }
        assert not bad, (comparison.backend, comparison.mode, bad)


@pytest.mark.parametrize("name", ["dense10x50", "cifar_cnn"])
def test_examples_on_jax_are_within_rounding_and_deterministic(
    name: str, example: Any, runner_pool: RunnerPool
) -> None:
    artifact = example(name)
    inputs = generate_inputs(InputRecipe("uniform", batch=4, seed=3), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool,
        artifact,
        inputs,
        backends=["keras-jax"],
        reference="numpy-f64",
        modes=MODES,
        repeats=2,
    )
    result = results["keras-jax"]
    assert result.status == "done", result.reason
    assert result.deterministic is True
    environment = result.environment
    assert environment["framework"] == "jax"
    assert environment["jax"] == __import__("jax").__version__
    assert environment["device"].startswith("CPU") and "test mode" not in environment["device"]
    within_rounding(artifact, results, ("keras-jax",))


def test_channels_first_cnn_checks_the_numpy_port(
    keras: Any, save_model: Any, runner_pool: RunnerPool
) -> None:
    """A CIFAR-style CNN in channels_first (convolutions, pooling, batch normalisation on
    axis 1, flatten): keras-jax and the float32 numpy port both agree with the float64
    port within rounding, so the two ports check each other where TensorFlow cannot."""
    L = keras.layers
    first = {"data_format": "channels_first"}
    model = keras.Sequential(
        [
            keras.Input((3, 12, 12), name="image"),
            L.Conv2D(8, 3, padding="same", activation="relu", name="conv1", **first),
            L.BatchNormalization(axis=1, name="bn1"),
            L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2", **first),
            L.MaxPooling2D(2, name="pool", **first),
            L.Conv2D(6, 2, padding="valid", activation="relu", name="conv3", **first),
            L.Flatten(name="flat", **first),
            L.Dense(10, activation="softmax", name="out"),
        ]
    )
    randomize_weights(model, seed=4)
    artifact = save_model(model)
    inputs = generate_inputs(InputRecipe("uniform", batch=4, seed=5), artifact.graph.input_shapes)
    results = run_locally(
        runner_pool,
        artifact,
        inputs,
        backends=["keras-jax", "numpy"],
        reference="numpy-f64",
        modes=MODES,
    )
    assert results["keras-jax"].status == "done", results["keras-jax"].reason
    within_rounding(artifact, results, ("keras-jax", "numpy"))
