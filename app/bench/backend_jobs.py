"""Backend jobs against bare Keras: keras-cpu vs `model.predict` and vs its compiled
function on each batch, numpy vs keras-cpu.

A backend job is measured the way a warm worker runs it (`run_backend` with the
pool's warm runner: the run, the dtype checks); the baseline is the same
multi-output model a user would build to see every layer (`capture_model`),
predicted with the same batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.bench.figures import Figure, interleaved, ratio, timed
from workers.backends.execution import run_backend
from workers.backends.pool import RunnerPool
from workers.engine.examples import write_example
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.keras_env import import_keras
from workers.engine.loading import ModelArtifact, load_artifact
from workers.engine.options import EngineOptions
from workers.engine.status import BackendStatus
from workers.engine.unroll import capture_model


def example_job(
    name: str, batch: int, directory: Path, options: EngineOptions
) -> tuple[ModelArtifact, dict[str, Any]]:
    """An example model and seeded uniform inputs for it."""
    artifact = load_artifact(write_example(name, directory), options)
    inputs = generate_inputs(
        InputRecipe("uniform", batch=batch, seed=0), artifact.graph.input_shapes
    )
    return artifact, inputs


def backend_job(
    pool: RunnerPool, backend: str, artifact: ModelArtifact, inputs: dict[str, Any]
) -> Callable[[], None]:
    def job() -> None:
        result = run_backend(
            pool, backend, artifact, inputs, modes=(), repeats=1, reference_feed=None
        )
        if result.status != BackendStatus.DONE:
            raise RuntimeError(f"{backend} did not run: {result.reason}")

    return job


def bare_predict(
    artifact: ModelArtifact, inputs: dict[str, Any], options: EngineOptions, *, per_batch: bool
) -> Callable[[], None]:
    """Every layer's output from a model whose outputs are every layer, as a user would
    ask for them: `predict` (its tf.data pipeline built on every call), or, `per_batch`,
    `predict_on_batch` on each batch (the compiled function alone: the warm floor)."""
    keras = import_keras(options.onednn)
    model = keras.saving.load_model(artifact.path, compile=False)
    capture = capture_model(keras, model).model
    feed = [inputs[layer.name] for layer in artifact.graph.inputs]
    size = options.keras_batch_size

    def predict() -> None:
        outputs = capture.predict(feed if len(feed) > 1 else feed[0], batch_size=size, verbose=0)
        np.asarray(outputs[-1])

    def predict_batches() -> None:
        for start in range(0, len(feed[0]), size):
            batch = [x[start : start + size] for x in feed]
            outputs = capture.predict_on_batch(batch if len(batch) > 1 else batch[0])
            np.asarray(outputs[-1])

    return predict_batches if per_batch else predict


def keras_vs_predict(directory: Path, repeats: int, pool: RunnerPool) -> list[Figure]:
    artifact, inputs = example_job("cifar_cnn", 256, directory, pool.options)
    job = backend_job(pool, "keras-cpu", artifact, inputs)
    figures = []
    for per_batch, floor in ((False, "model.predict"), (True, "predict_on_batch per batch")):
        bare = bare_predict(artifact, inputs, pool.options, per_batch=per_batch)
        measured, baseline = interleaved(job, bare, repeats)
        label = f"keras-cpu job vs {floor} (cifar_cnn, batch 256)"
        figures.append(ratio(label, measured, baseline, 1.2))
    return figures


def numpy_vs_keras(directory: Path, repeats: int, pool: RunnerPool) -> list[Figure]:
    figures = []
    for name, batch, target in (("dense10x50", 4096, None), ("cifar_cnn", 64, 3.0)):
        artifact, inputs = example_job(name, batch, directory, pool.options)
        keras_times = timed(backend_job(pool, "keras-cpu", artifact, inputs), repeats)
        numpy_times = timed(backend_job(pool, "numpy", artifact, inputs), repeats)
        figures.append(
            ratio(
                f"numpy job vs keras-cpu job ({name}, batch {batch})",
                numpy_times,
                keras_times,
                target,
            )
        )
    return figures
