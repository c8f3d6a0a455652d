"""TFLite jobs against the bare interpreter: each form's warm job (`run_backend` with the
pool's warm runner) against LiteRT invoking the same converted capture model on the same
inputs, the least any way of capturing every layer through TFLite needs (the signature
runner returns every output as an array of its own). The first job (conversion,
calibration, the capture-perturbation check) is reported beside it, untargeted: it is
paid once per model and input set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.bench.backend_jobs import backend_job, example_job
from app.bench.figures import LEAST_REPEATS, Figure, interleaved, ratio, timed
from workers.backends.pool import RunnerPool
from workers.backends.tflite.conversion import (
    DYNAMIC,
    FLOAT16,
    FLOAT32,
    INT8,
    calibration_samples,
    convert,
)
from workers.engine.keras_env import import_keras
from workers.engine.unroll import capture_model

FORMS = (
    ("tflite", FLOAT32),
    ("tflite-f16", FLOAT16),
    ("tflite-dynamic", DYNAMIC),
    ("tflite-int8", INT8),
)
BATCH = 64


def _invoke(signature: Any, feeds: list[np.ndarray]) -> Callable[[], None]:
    def invoke() -> None:
        signature(**{f"i{j}": x for j, x in enumerate(feeds)})

    return invoke


def tflite_figures(directory: Path, repeats: int, pool: RunnerPool) -> list[Figure]:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    keras = import_keras(pool.options.onednn)
    artifact, inputs = example_job("cifar_cnn", BATCH, directory, pool.options)
    capture = capture_model(keras, keras.saving.load_model(artifact.path, compile=False))
    feeds = [inputs[layer.name] for layer in artifact.graph.inputs]
    figures = []
    for backend, quantization in FORMS:
        calibration = calibration_samples(feeds) if quantization.calibrated else None
        flatbuffer = convert(
            keras, tf, capture.model.inputs, capture.model.outputs, quantization, calibration
        )
        signature = Interpreter(model_content=flatbuffer).get_signature_runner("serve")
        job = backend_job(pool, backend, artifact, inputs)
        first = timed(job, 1, warmup=0)[0]
        measured, baseline = interleaved(
            job, _invoke(signature, feeds), max(repeats, LEAST_REPEATS)
        )
        figure = ratio(
            f"{backend} job vs LiteRT invoke (cifar_cnn, batch {BATCH})", measured, baseline, 1.3
        )
        figure.detail["first_job_s"] = first
        figures.append(figure)
    return figures
