"""The rounding envelope: correct backends raise no alarm, on the examples and on a dot
product whose rounding error a fixed rel_l2 threshold would take for a bug."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.diagnosis.diagnose import Budget, diagnose_outputs
from workers.engine.examples import EXAMPLES
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
