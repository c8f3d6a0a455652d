"""Backend jobs against bare Keras: keras-cpu vs `model.predict`, numpy vs keras-cpu.

A backend job is measured the way a warm worker runs it (`run_backend`: a runner,
its activation, the run, the dtype checks); the baseline is the same multi-output
model a user would build to see every layer, predicted with the same batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.bench.figures import Figure, ratio, timed
from app.config import settings
from workers.drift_job import run_backend
from workers.examples import write_example
from workers.inputs import InputRecipe, generate_inputs
from workers.keras_env import import_keras
from workers.model_loading import ModelArtifact, load_artifact


def example_job(name: str, batch: int, directory: Path) -> tuple[ModelArtifact, dict[str, Any]]:
    """An example model and seeded uniform inputs for it."""
    artifact = load_artifact(write_example(name, directory))
    inputs = generate_inputs(
        InputRecipe("uniform", batch=batch, seed=0), artifact.graph.input_shapes
    )
    return artifact, inputs


def backend_job(
    backend: str, artifact: ModelArtifact, inputs: dict[str, Any]
) -> Callable[[], None]:
    def job() -> None:
        result = run_backend(backend, artifact, inputs, modes=(), repeats=1, reference_feed=None)
        if result.status != "done":
            raise RuntimeError(f"{backend} did not run: {result.reason}")

    return job


def bare_predict(artifact: ModelArtifact, inputs: dict[str, Any]) -> Callable[[], None]:
    """`predict` on a model whose outputs are every layer: what a user would write."""
    keras = import_keras()
    model = keras.saving.load_model(artifact.path, compile=False)
    names = [layer.name for layer in artifact.graph.compute_layers]
    capture = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    feed = [inputs[layer.name] for layer in artifact.graph.inputs]

    def predict() -> None:
        outputs = capture.predict(
            feed if len(feed) > 1 else feed[0], batch_size=settings.keras_batch_size, verbose=0
        )
        np.asarray(outputs[-1])

    return predict


def keras_vs_predict(directory: Path, repeats: int) -> Figure:
    artifact, inputs = example_job("cifar_cnn", 256, directory)
    baseline = timed(bare_predict(artifact, inputs), repeats)
    measured = timed(backend_job("keras-cpu", artifact, inputs), repeats)
    return ratio("keras-cpu job vs model.predict (cifar_cnn, batch 256)", measured, baseline, 1.2)


def numpy_vs_keras(directory: Path, repeats: int) -> list[Figure]:
    figures = []
    for name, batch, target in (("dense10x50", 4096, None), ("cifar_cnn", 64, 3.0)):
        artifact, inputs = example_job(name, batch, directory)
        keras_times = timed(backend_job("keras-cpu", artifact, inputs), repeats)
        numpy_times = timed(backend_job("numpy", artifact, inputs), repeats)
        figures.append(
            ratio(
                f"numpy job vs keras-cpu job ({name}, batch {batch})",
                numpy_times,
                keras_times,
                target,
            )
        )
    return figures
