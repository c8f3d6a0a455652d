"""Runs per minute on this machine: dense10x50 (batch 256) and cifar_cnn (batch 8) on
every CPU backend, a batch of runs posted at once, with the embedded executor (1 and 2
local workers: SQLite, job processes under the server) and with Celery (PostgreSQL, a
private Redis, 1 and 2 workers per queue, each worker one job at a time).

Every set starts warm: as many untimed runs at once as there are workers, then one
alone, so each job process has loaded TensorFlow and started its browser. The
per-run costs it reports (each queue's seconds: its jobs from the stored start and
end times, which include their comparisons on arrival, but not the run's short last
step; bytes stored; divergence rows) are what the README's capacity model is made
from. Not in the default parts (4 to 8 minutes on 2 cores):
`driftbench bench --only throughput`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from app.bench.end_to_end import cpu_backends, recorded_seconds, run_to_done
from app.bench.figures import Figure
from app.service_process import LiveServer, LiveWorker, postgres_database, private_redis
from driftbench.client import Client, wait_until_available
from workers.backends.registry import backend_entry
from workers.engine.examples import write_example
from workers.engine.options import EngineOptions
from workers.engine.status import BackendStatus, RunStatus

# (model, batch, runs timed per set)
WORKLOADS = (("dense10x50", 256, 16), ("cifar_cnn", 8, 8))
WORKERS = (1, 2)
QUEUES = ("cpu", "browser")


@contextmanager
def _embedded(directory: Path, workers: int) -> Iterator[Client]:
    with (
        LiveServer(directory, None, local_workers=str(workers)) as server,
        server.client(timeout_s=600) as client,
    ):
        yield client


@contextmanager
def _celery(
    directory: Path, workers: int, postgres_admin_url: str, backends: list[str]
) -> Iterator[Client]:
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database(postgres_admin_url, "driftbench_throughput"))
        broker = stack.enter_context(private_redis())
        env = {
            "DRIFTBENCH_EXECUTOR": "celery",
            "DRIFTBENCH_BROKER_URL": broker,
            "DRIFTBENCH_DATABASE_URL": url,
        }
        server = stack.enter_context(
            LiveServer(directory, url, executor="celery", broker_url=broker)
        )
        for queue in QUEUES:
            for _ in range(workers):
                worker = LiveWorker(directory, env, queue).start()
                stack.callback(worker.stop)
        client = stack.enter_context(server.client(timeout_s=600))
        wait_until_available(client, backends, timeout_s=180)
        yield client


def _queue_seconds(run: dict[str, Any], hands_on: bool) -> dict[str, float]:
    """Seconds each queue spent on the run's backends, from their stored start and end
    times (a backend is recorded finished once its comparison on arrival has ended).
    With `hands_on` (the embedded executor) a browser or GPU backend's comparison ran in
    the CPU's lane, or in its own once that had nothing left to run (the run does not
    record which): its own queue is charged its job (`timings.job`), the CPU's the
    comparing."""
    spent: dict[str, float] = {}
    for b in run["backend_runs"]:
        queue = backend_entry(b["backend"]).queue
        if hands_on and queue != "cpu" and "compare" in b["timings"]:
            spent[queue] = spent.get(queue, 0.0) + b["timings"]["job"]
            spent["cpu"] = spent.get("cpu", 0.0) + b["timings"]["compare"]
        else:
            spent[queue] = spent.get(queue, 0.0) + recorded_seconds(b)
    return spent


def _runs_per_minute(
    client: Client,
    body: dict[str, Any],
    count: int,
    workers: int,
    data_dir: Path,
    hands_on: bool,
) -> Figure:
    warm = [client.start_run(**body)["id"] for _ in range(workers)]
    for run_id in warm:
        client.wait_for_run(run_id, timeout_s=900)
    run_to_done(client, body)
    started = time.perf_counter()
    ids = [client.start_run(**body)["id"] for _ in range(count)]
    runs = [client.wait_for_run(run_id, timeout_s=1800) for run_id in ids]
    elapsed = time.perf_counter() - started
    failed = [
        run["id"]
        for run in runs
        if run["status"] != RunStatus.DONE
        or any(b["status"] != BackendStatus.DONE for b in run["backend_runs"])
    ]
    if failed:
        raise RuntimeError(f"throughput runs {failed} did not finish cleanly")
    spent = [_queue_seconds(run, hands_on) for run in runs]
    stored = [
        sum(path.stat().st_size for path in (data_dir / "outputs" / str(run_id)).glob("*.npz"))
        for run_id in ids
    ]
    rows = len(client.divergence(ids[-1])["rows"]) + sum(
        len(client.divergence(ids[-1], against=against)["rows"])
        for against in runs[-1]["compare_against"]
    )
    return Figure(
        name="",
        value=count / elapsed * 60,
        unit="runs/min",
        detail={
            "runs": count,
            "seconds": elapsed,
            "queue_s_per_run": {q: statistics.median(s[q] for s in spent) for q in spent[0]},
            "stored_bytes_per_run": statistics.median(stored),
            "divergence_rows_per_run": rows,
        },
    )


def throughput_figures(
    directory: Path, options: EngineOptions, postgres_admin_url: str
) -> list[Figure]:
    backends = cpu_backends(options)
    figures = []
    for executor in ("embedded", "celery"):
        for workers in WORKERS:
            label = (
                f"{workers} local worker(s)"
                if executor == "embedded"
                else f"Celery, {workers} worker(s) per queue"
            )
            data_dir = directory / f"throughput-{executor}-{workers}"
            cluster = (
                _embedded(data_dir, workers)
                if executor == "embedded"
                else _celery(data_dir, workers, postgres_admin_url, backends)
            )
            with cluster as client:
                for model, batch, count in WORKLOADS:
                    path = write_example(model, directory)
                    _, body = client.prepare_run(path, backends, batch=batch)
                    figure = _runs_per_minute(
                        client, body, count, workers, data_dir, executor == "embedded"
                    )
                    runs = f"{model}, batch {batch}, {len(backends) + 1} backends"
                    figure.name = f"throughput, {label} ({runs})"
                    figures.append(figure)
    return figures
