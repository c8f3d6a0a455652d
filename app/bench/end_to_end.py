"""End to end: `POST /api/runs` until "done" on every CPU backend, embedded mode,
against the sum of what each backend costs bare (Keras predict, our numpy port's
own forward pass, a bare TF.js page per browser backend)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from app.bench.backend_jobs import bare_predict, example_job
from app.bench.figures import Figure, median, ratio, timed
from app.bench.served import run_body, served_app
from app.bench.tfjs_pages import TFJS_BACKENDS, bare_page
from workers.model_loading import ModelArtifact
from workers.runners import DEFAULT_REFERENCE, runner_class

MODEL, BATCH = "dense10x50", 256
POLL_S = 0.01


def cpu_backends() -> list[str]:
    candidates = ["keras-cpu", "numpy", *TFJS_BACKENDS]
    return [name for name in candidates if runner_class(name).availability() is None]


def bare_backend(backend: str, artifact: ModelArtifact, inputs: dict) -> Callable[[], None]:
    """The least work that gives one backend's final numbers for these inputs."""
    if backend == "keras-cpu":
        return bare_predict(artifact, inputs)
    runner = runner_class(backend)()
    runner.activate()
    if backend.startswith("tfjs-"):
        shape = list(next(iter(inputs.values())).shape)
        return bare_page(runner, runner.model_url(artifact), shape)  # type: ignore[attr-defined]
    return lambda: runner.run(artifact, inputs)


def run_to_done(client: httpx.Client, body: dict) -> float:
    started = time.perf_counter()
    run_id = client.post("/api/runs", json=body).json()["id"]
    while True:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in ("done", "failed"):
            break
        time.sleep(POLL_S)
    elapsed = time.perf_counter() - started
    failed = [b["backend"] for b in run["backend_runs"] if b["status"] != "done"]
    if run["status"] != "done" or failed:
        raise RuntimeError(f"bench run {run_id} did not finish cleanly: {run}")
    return elapsed


def end_to_end(directory: Path, repeats: int) -> Figure:
    artifact, inputs = example_job(MODEL, BATCH, directory)
    backends = cpu_backends()
    bare = {
        name: median(timed(bare_backend(name, artifact, inputs), repeats))
        for name in [DEFAULT_REFERENCE, *backends]
    }
    with (
        served_app(directory / "e2e") as served,
        httpx.Client(base_url=served.url, timeout=600) as client,
    ):
        _, body = run_body(client, artifact.path, BATCH, backends)
        measured = timed(lambda: run_to_done(client, body), repeats)
    figure = ratio(
        f"POST /api/runs to done vs sum of bare backends ({MODEL}, batch {BATCH}, "
        f"{len(bare)} backends)",
        measured,
        [sum(bare.values())],
        1.3,
    )
    figure.detail["bare_s"] = bare
    return figure
