"""End to end: `POST /api/runs` until "done" on every CPU backend, embedded mode,
against the sum of what each backend costs bare (Keras predict, our numpy port's
own forward pass, a bare TF.js page per browser backend)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.bench.backend_jobs import bare_predict, example_job
from app.bench.figures import Figure, median, ratio, timed
from app.bench.tfjs_pages import TFJS_BACKENDS, bare_page, tfjs_runner
from app.service_process import LiveServer
from driftbench.client import Client
from workers.backends.pool import RunnerPool
from workers.backends.registry import DEFAULT_REFERENCE, runner_class
from workers.engine.loading import ModelArtifact
from workers.engine.options import EngineOptions
from workers.engine.status import BackendStatus, RunStatus

MODEL, BATCH = "dense10x50", 256
POLL_S = 0.01


def cpu_backends(options: EngineOptions) -> list[str]:
    candidates = ["keras-cpu", "numpy", *TFJS_BACKENDS]
    return [name for name in candidates if runner_class(name).availability(options) is None]


def served(data_dir: Path, database_url: str | None = None) -> LiveServer:
    """The service as the benchmarks measure it: `driftbench serve`, embedded mode, its own
    data dir, no tokens (loopback)."""
    return LiveServer(data_dir, database_url, auth="off")


def bare_backend(
    pool: RunnerPool, backend: str, artifact: ModelArtifact, inputs: dict[str, Any]
) -> Callable[[], None]:
    """The least work that gives one backend's final numbers for these inputs."""
    if backend == "keras-cpu":
        return bare_predict(artifact, inputs, pool.options)
    if backend.startswith("tfjs-"):
        shape = list(next(iter(inputs.values())).shape)
        return bare_page(tfjs_runner(pool, backend), artifact, shape)
    runner = pool.runner(backend)
    return lambda: runner.run(artifact, inputs)


def run_to_done(client: Client, body: dict[str, Any]) -> float:
    """Seconds from `POST /api/runs` to the run being done on every backend."""
    started = time.perf_counter()
    run = client.wait_for_run(client.start_run(**body)["id"], timeout_s=3600, poll_s=POLL_S)
    elapsed = time.perf_counter() - started
    failed = [b["backend"] for b in run["backend_runs"] if b["status"] != BackendStatus.DONE]
    if run["status"] != RunStatus.DONE or failed:
        raise RuntimeError(f"bench run {run['id']} did not finish cleanly: {run}")
    return elapsed


def end_to_end(directory: Path, repeats: int, pool: RunnerPool) -> Figure:
    artifact, inputs = example_job(MODEL, BATCH, directory, pool.options)
    backends = cpu_backends(pool.options)
    bare = {
        name: median(timed(bare_backend(pool, name, artifact, inputs), repeats))
        for name in [DEFAULT_REFERENCE, *backends]
    }
    with served(directory / "e2e") as server, server.client(timeout_s=600) as client:
        _, body = client.prepare_run(artifact.path, backends, batch=BATCH)
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
