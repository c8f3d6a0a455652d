"""What diagnosis adds to a run (issue 17's figure): the keras-cpu job and its comparison
with diagnosis, against the same job and comparison without it, timed in turn, for a
backend without a bug (keras-cpu) and a port with one corrupted layer (the numpy port
with conv2d_2's kernel read as OIHW). The figure was first set against the keras-cpu
job alone, when that job paid for `predict`'s tf.data pipeline (50 ms on cifar_cnn
at batch 8): since the job costs 5-8 ms, the comparison alone is 4-5 times the job, and
that ratio (in each figure's detail, with `model.predict`'s) no longer says what
diagnosis adds. The bug costs more: every hypothesis runs on its layer, 46 kernel
layouts among them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from app.bench.backend_jobs import backend_job, bare_predict, example_job
from app.bench.figures import Figure, interleaved, median, ratio, timed
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
    artifact, inputs = example_job("cifar_cnn", 8, directory, pool.options)
    job = backend_job(pool, "keras-cpu", artifact, inputs)
    job_times = timed(job, repeats)
    predict_times = timed(bare_predict(artifact, inputs, pool.options, per_batch=False), repeats)

    def result(backend: str, model: ModelArtifact) -> BackendResult:
        return run_backend(pool, backend, model, inputs, modes=(), repeats=1, reference_feed=None)

    results = {
        "numpy-f64": result("numpy-f64", artifact),
        "keras-cpu": result("keras-cpu", artifact),
        "ext:oihw": replace(result("numpy", _oihw_port(artifact)), backend="ext:oihw"),
    }
    figures = []
    for backend, label, target in (
        ("keras-cpu", "no bug", 2.5),
        ("ext:oihw", f"{CORRUPTED} kernel read as OIHW", 12.0),
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
            lambda: (job(), diagnosed()), lambda: (job(), plain()), repeats
        )
        figure = ratio(
            f"a run with diagnosis vs without, {label} (cifar_cnn, batch 8: the keras-cpu "
            "job and its comparison)",
            with_diagnosis,
            without,
            target,
        )
        compared = timed(diagnosed, repeats)
        figure.detail["compare_and_diagnosis_s"] = median(compared)
        figure.detail["compare_alone_s"] = median(timed(plain, repeats))
        figure.detail["keras_cpu_job_s"] = median(job_times)
        figure.detail["vs_keras_cpu_job"] = median(compared) / median(job_times)
        figure.detail["vs_model_predict"] = median(compared) / median(predict_times)
        figure.detail["model_predict_s"] = median(predict_times)
        [comparison] = diagnosed()
        figure.detail["explained"] = {
            row.layer: row.explained_by for row in comparison.layers if row.explained_by
        }
        figures.append(figure)
    return figures
