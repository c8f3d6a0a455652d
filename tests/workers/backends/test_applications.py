"""keras.applications architectures (weights=None, fixed seeds, small inputs) end to end on
the CPU backends and TF.js: every layer within rounding of our float64 port, with keras-cpu
as the second opinion. The full zoo is issue 15's; this is the part that runs here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.engine.compare import compare
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.loading import ModelArtifact

WITHIN_ROUNDING = {"identical", "rounding"}
BACKENDS = ["keras-cpu", "numpy", "tfjs-cpu"]


@pytest.mark.parametrize("architecture", ["EfficientNetB0", "EfficientNetV2B0"])
def test_application_is_compared_on_every_layer_within_rounding(
    architecture: str,
    keras: Any,
    save_model: Callable[..., ModelArtifact],
    runner_pool: RunnerPool,
) -> None:
    """Their Rescaling and Normalization front end used to leave numpy-f64 unsupported, so
    nothing was compared; now every layer of every backend is."""
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, architecture)(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    artifact = save_model(model, name=architecture)
    inputs = generate_inputs(
        InputRecipe("uniform", batch=1, seed=0, low=0.0, high=255.0), artifact.graph.input_shapes
    )
    results = run_locally(runner_pool, artifact, inputs, backends=BACKENDS, reference="numpy-f64")
    statuses = {backend: result.status for backend, result in results.items()}
    assert statuses == dict.fromkeys(["numpy-f64", *BACKENDS], "done"), results
    comparisons = compare(artifact.graph, results, against="numpy-f64")
    assert {c.backend for c in comparisons} == set(BACKENDS)
    for comparison in comparisons:
        assert len(comparison.layers) == len(artifact.graph.compute_layers)
        worse = {r.layer: r.divergence.verdict for r in comparison.layers}
        worse = {layer: v for layer, v in worse.items() if v not in WITHIN_ROUNDING}
        assert not worse, (comparison.backend, worse)
