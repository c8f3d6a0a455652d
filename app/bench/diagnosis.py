"""What diagnosis adds to a run: a backend without a bug (keras-cpu) and a port with one
corrupted layer (the numpy port with conv2d_2's kernel read as OIHW), each compared
and diagnosed, against the keras-cpu job that produced the outputs. The ratio to
`model.predict` (what the job cost when the targets were set: it no longer builds
predict's tf.data pipeline) and the comparison alone are in each figure's detail.
The bug costs more: every hypothesis runs on its layer, 46 kernel layouts among them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from app.bench.backend_jobs import backend_job, bare_predict, example_job
from app.bench.figures import Figure, median, ratio, timed
from workers.backends.execution import run_backend
from workers.backends.pool import RunnerPool
from workers.diagnosis.runs import run_diagnoser
from workers.engine.compare import compare
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
    job_times = timed(backend_job(pool, "keras-cpu", artifact, inputs), repeats)
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

        def diagnose(pair: dict[str, BackendResult] = pair) -> None:
            diagnoser = run_diagnoser(
                artifact.graph, inputs, pair, fed_from="numpy-f64", options=pool.options
            )
            compare(artifact.graph, pair, against="numpy-f64", diagnose=diagnoser)

        diagnosis_times = timed(diagnose, repeats)
        figure = ratio(
            f"diagnosis of a run, {label} (cifar_cnn, batch 8) vs the keras-cpu job",
            diagnosis_times,
            job_times,
            target,
        )
        figure.detail["vs_model_predict"] = median(diagnosis_times) / median(predict_times)
        figure.detail["model_predict_s"] = median(predict_times)
        diagnoser = run_diagnoser(
            artifact.graph, inputs, pair, fed_from="numpy-f64", options=pool.options
        )
        [comparison] = compare(artifact.graph, pair, against="numpy-f64", diagnose=diagnoser)
        figure.detail["compare_alone_s"] = median(
            timed(lambda pair=pair: compare(artifact.graph, pair, against="numpy-f64"), repeats)
        )
        figure.detail["explained"] = {
            row.layer: row.explained_by for row in comparison.layers if row.explained_by
        }
        figures.append(figure)
    return figures
