"""What a supervised job process costs per job, with oneDNN on and off.

The same keras-cpu job is timed inside its job process (what the call costs where
it runs, as it would in the server's own process) and as its supervisor sees it
(the pipe both ways and the memory and time watch). A served app on SQLite stores
one run per model; the job is then sent again and again to a warm job process of
our own, started on the served app's data dir, the backend run put back in the
queue before each send. The first send of each model loads and traces it and is
not counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, update

from app.bench.backend_jobs import example_job
from app.bench.end_to_end import run_to_done, served
from app.bench.figures import Figure, median, ratio
from app.core.db import make_engine
from app.data.orm import BackendRun
from workers.engine.options import EngineOptions
from workers.engine.sequence import Step
from workers.engine.status import BackendStatus
from workers.jobs import Job, job_processes
from workers.processes.supervisor import JobAnswer, JobLimits, JobProcess

MODELS = (("dense10x50", 256), ("cifar_cnn", 64))
BACKEND = "keras-cpu"
ONEDNN = ("on", "off")


@contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Environment for a job process to inherit at its start (settings are read from it)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def requeue(engine: Engine, run_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(BackendRun)
            .where(BackendRun.run_id == run_id, BackendRun.backend == BACKEND)
            .values(status=BackendStatus.QUEUED, attempts=0)
        )


def supervised_jobs(
    process: JobProcess, limits: JobLimits, engine: Engine, run_id: int, count: int
) -> list[JobAnswer]:
    answers = []
    for _ in range(count):
        requeue(engine, run_id)
        answers.append(process.run(Job(run_id, Step(BACKEND)), BACKEND, limits))
    if any(answer.result != BackendStatus.DONE for answer in answers):
        raise RuntimeError(f"bench job {BACKEND} of run {run_id} did not finish: {answers}")
    return answers


def isolation_figures(directory: Path, repeats: int, options: EngineOptions) -> list[Figure]:
    data_dir = directory / "isolation"
    runs: dict[str, int] = {}
    with served(data_dir) as server, server.client(timeout_s=600) as client:
        for name, batch in MODELS:
            artifact, _ = example_job(name, 1, directory, options)
            _, body = client.prepare_run(artifact.path, [BACKEND], batch=batch)
            run_to_done(client, body)
            runs[name] = client.get("/api/runs?limit=1").json()["data"][0]["id"]
    database_url = f"sqlite:///{data_dir.resolve() / 'driftbench.db'}"
    engine = make_engine(database_url)
    # The service's own job worker and limits; the processes are ours, one per oneDNN.
    service = job_processes()
    figures = []
    try:
        for onednn in ONEDNN:
            with environment(
                DRIFTBENCH_DATA_DIR=str(data_dir),
                DRIFTBENCH_DATABASE_URL=database_url,
                DRIFTBENCH_ONEDNN=onednn,
            ):
                process = JobProcess("cpu", service.worker)
            try:
                for name, batch in MODELS:
                    answers = supervised_jobs(
                        process, service.limits, engine, runs[name], repeats + 1
                    )[1:]
                    figure = ratio(
                        f"keras-cpu job in its supervised process vs the job alone "
                        f"({name}, batch {batch}, oneDNN {onednn})",
                        [answer.supervised_s for answer in answers],
                        [answer.job_s for answer in answers],
                        1.1,
                    )
                    figure.detail["isolation_ms"] = 1000 * median(
                        [answer.supervised_s - answer.job_s for answer in answers]
                    )
                    figures.append(figure)
            finally:
                process.stop()
    finally:
        engine.dispose()
    return figures
