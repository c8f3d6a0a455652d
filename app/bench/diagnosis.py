"""What diagnosis adds to a run, as issue 17 asked ("the benchmark reports what diagnosis
adds to a run with a bug and to one without"): the job that produced a backend's
outputs and their comparison with the reference, with diagnosis and without, timed in
turn; for a backend without a bug (the keras-cpu job) and a port with one corrupted
layer (the numpy port's job, conv2d_2's kernel read as OIHW). The targets were first
set against the keras-cpu job alone, when that job paid for `predict`'s tf.data
pipeline (50 ms on cifar_cnn at batch 8); since the job costs 5-8 ms, comparing alone
is 4-5 times the job, and that ratio no longer says what diagnosis adds. It stays
reported, with no target, beside `model.predict`'s. The bug costs more: every
hypothesis runs on its layer, the 43 other layouts of its kernel among them (first on one
sample)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from app.bench.backend_jobs import backend_job, bare_predict, example_job
from app.bench.figures import LEAST_REPEATS, Figure, interleaved, median, ratio, timed
from workers.backends.execution import run_backend
from workers.backends.pool import RunnerPool
from workers.diagnosis.runs import run_diagnoser
from workers.engine.compare import Comparison, compare
from workers.engine.loading import ModelArtifact
from workers.engine.results import BackendResult

CORRUPTED = "conv2d_2"


def _oihw_port(artifact: ModelArtifact) -> ModelArtifact:
    """The model with one kernel's HWIO bytes read as OIHW: a C port's classic bug."""
    layers = []
    for layer in artifact.graph.layers:
        if layer.name == CORRUPTED:
            kernel = layer.weights["kernel"]
            h, w, i, o = kernel.shape
            read = kernel.reshape(o, i, h, w).transpose(2, 3, 1, 0)
            layer = replace(layer, weights={**layer.weights, "kernel": read})
        layers.append(layer)
    return replace(artifact, graph=replace(artifact.graph, layers=layers))


def diagnosis_figures(directory: Path, repeats: int, pool: RunnerPool) -> list[Figure]:
    repeats = max(repeats, LEAST_REPEATS)
    artifact, inputs = example_job("cifar_cnn", 8, directory, pool.options)
    port = _oihw_port(artifact)
    keras_job = backend_job(pool, "keras-cpu", artifact, inputs)
    keras_times = timed(keras_job, repeats)
    predict_times = timed(bare_predict(artifact, inputs, pool.options, per_batch=False), repeats)

    def result(backend: str, model: ModelArtifact) -> BackendResult:
        return run_backend(pool, backend, model, inputs, modes=(), repeats=1, reference_feed=None)

    results = {
        "numpy-f64": result("numpy-f64", artifact),
        "keras-cpu": result("keras-cpu", artifact),
        "ext:oihw": replace(result("numpy", port), backend="ext:oihw"),
    }
    figures = []
    for backend, job, whose, label, target in (
        ("keras-cpu", keras_job, "the keras-cpu job", "no bug", 2.5),
        (
            "ext:oihw",
            backend_job(pool, "numpy", port, inputs),
            "the numpy port's job",
            f"{CORRUPTED} kernel read as OIHW",
            12.0,
        ),
    ):
        pair = {"numpy-f64": results["numpy-f64"], backend: results[backend]}

        def diagnosed(pair: dict[str, BackendResult] = pair) -> list[Comparison]:
            diagnoser = run_diagnoser(
                artifact.graph, inputs, pair, fed_from="numpy-f64", options=pool.options
            )
            return compare(artifact.graph, pair, against="numpy-f64", diagnose=diagnoser)

        def plain(pair: dict[str, BackendResult] = pair) -> list[Comparison]:
            return compare(artifact.graph, pair, against="numpy-f64")

        with_diagnosis, without = interleaved(
            lambda job=job, diagnosed=diagnosed: (job(), diagnosed()),
            lambda job=job, plain=plain: (job(), plain()),
            repeats,
        )
        figure = ratio(
            f"a run with diagnosis vs without ({whose} and its comparison), {label} "
            "(cifar_cnn, batch 8)",
            with_diagnosis,
            without,
            target,
        )
        figure.detail["compare_alone_s"] = median(timed(plain, repeats))
        [comparison] = diagnosed()
        figure.detail["explained"] = {
            row.layer: row.explained_by for row in comparison.layers if row.explained_by
        }
        compared = timed(diagnosed, repeats)
        old = ratio(
            f"comparison and diagnosis vs the keras-cpu job alone (the first definition), {label}",
            compared,
            keras_times,
            None,
        )
        old.detail["vs_model_predict"] = median(compared) / median(predict_times)
        old.detail["model_predict_s"] = median(predict_times)
        figures += [figure, old]
    return figures
