"""The bench's floors do the whole of what they stand for: a floor that skipped an
output, or left it where the caller cannot read it, would flatter every job measured
against it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from app.bench.jax_jobs import JaxFloor
from app.bench.tfjs_pages import tfjs_runner, warm_page
from workers.backends.pool import RunnerPool
from workers.backends.registry import runner_class
from workers.backends.tfjs import browser_host
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.loading import ModelArtifact
from workers.engine.options import EngineOptions


def _inputs(artifact: ModelArtifact, batch: int) -> dict[str, np.ndarray]:
    return generate_inputs(InputRecipe("uniform", batch=batch, seed=3), artifact.graph.input_shapes)


def test_tfjs_floor_hands_python_the_jobs_every_output_bit_for_bit(
    example: Callable[[str], ModelArtifact], runner_pool: RunnerPool
) -> None:
    artifact = example("cifar_cnn")
    inputs = _inputs(artifact, 3)
    runner = tfjs_runner(runner_pool, "tfjs-cpu")
    job = runner.run(artifact, inputs)
    delivered = warm_page(runner, artifact, inputs).delivered()
    assert len(delivered) == len(job) > 5
    for (name, expected), got in zip(job.items(), delivered, strict=True):
        assert got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_a_tfjs_floor_outlives_the_page_it_was_placed_in(
    example: Callable[[str], ModelArtifact],
    engine_options: EngineOptions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A warm page is replaced after PAGE_JOBS jobs: a floor timed over more calls than
    that (the end-to-end part's warm-up and repeats) places itself in the new page
    again and still hands over the job's outputs."""
    monkeypatch.setattr(browser_host, "PAGE_JOBS", 3)
    artifact = example("regression")
    inputs = _inputs(artifact, 5)
    with RunnerPool(engine_options) as fresh:
        runner = tfjs_runner(fresh, "tfjs-cpu")
        floor = warm_page(runner, artifact, inputs)
        for _ in range(2 * browser_host.PAGE_JOBS):
            floor.in_page()
            delivered = floor.delivered()
        job = runner.run(artifact, inputs)
    for (name, expected), got in zip(job.items(), delivered, strict=True):
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_a_tfjs_floor_in_a_page_no_job_ran_in_runs_on_the_jobs_backend(
    example: Callable[[str], ModelArtifact], engine_options: EngineOptions
) -> None:
    """A fresh page is on TF.js's default backend until something activates another: a
    tfjs-wasm floor placed there first would have timed another backend's numbers (as
    `bench --only e2e` and `--only big` did), not what a wasm job needs."""
    artifact = example("regression")
    inputs = _inputs(artifact, 5)
    with RunnerPool(engine_options) as fresh:
        runner = tfjs_runner(fresh, "tfjs-wasm")
        delivered = warm_page(runner, artifact, inputs).delivered()
        job = runner.run(artifact, inputs)
    assert runner.environment()["backend"] == "wasm"
    for (name, expected), got in zip(job.items(), delivered, strict=True):
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_keras_jax_floor_hands_back_every_output(
    example: Callable[[str], ModelArtifact], runner_pool: RunnerPool, keras: Any
) -> None:
    if (reason := runner_class("keras-jax").availability(runner_pool.options)) is not None:
        raise AssertionError(f"keras-jax must be installed by make install: {reason}")
    artifact = example("cifar_cnn")
    inputs = _inputs(artifact, 4)
    expected = runner_pool.runner("keras-cpu").run(artifact, inputs)
    floor = JaxFloor(artifact.path, [inputs[layer.name] for layer in artifact.graph.inputs])
    try:
        delivered = floor.predict()
    finally:
        floor.close()
    assert len(delivered) == len(expected) > 5
    for (name, reference), got in zip(expected.items(), delivered, strict=True):
        assert got.shape == reference.shape, name
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5, err_msg=name)
