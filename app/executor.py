"""Where runs execute: the embedded pool (default) and the start-up recovery of stopped runs.

`DRIFTBENCH_EXECUTOR=local` works on runs from threads of the server process and
runs every job in a warm job process the server supervises (workers/job_process.py):
a crash or an out-of-memory kill fails one backend, never the server, and the
browser and TensorFlow stay warm between jobs. `DRIFTBENCH_EXECUTOR=celery` sends
them to `driftbench worker` processes through the broker. Runs that were queued or running
when the server stopped are re-run on the next start, or marked failed once they
have used up `DRIFTBENCH_JOB_ATTEMPTS`, so none stays "running" forever.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from sqlalchemy import select

from app.config import settings
from app.db import session_scope
from app.models import Run, utcnow
from workers.job_process import JobProcesses
from workers.run_job import execute_run, job_limits

log = logging.getLogger(__name__)


class Executor(Protocol):
    def submit(self, run_id: int) -> None: ...

    def shutdown(self) -> None: ...


class LocalExecutor:
    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="driftbench-run")
        self._processes = JobProcesses(job_limits())

    def submit(self, run_id: int) -> None:
        self._pool.submit(execute_run, run_id, self._processes)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._processes.close()


def recover_interrupted_runs(executor: Executor) -> list[int]:
    """Re-queue or fail the runs a stopped server left queued or running; returns re-queued ids."""
    requeued = []
    with session_scope() as session:
        runs = session.scalars(select(Run).where(Run.status.in_(("queued", "running")))).all()
        for run in runs:
            unfinished = [b for b in run.backend_runs if b.status in ("queued", "running")]
            if run.attempts >= settings.job_attempts:
                reason = (
                    f"interrupted: the server stopped during this run "
                    f"{run.attempts} time(s), the limit of DRIFTBENCH_JOB_ATTEMPTS"
                )
                run.status, run.error, run.finished_at = "failed", reason, utcnow()
                for backend_run in unfinished:
                    backend_run.status, backend_run.reason = "failed", reason
            else:
                run.status = "queued"
                for backend_run in unfinished:
                    backend_run.status = "queued"
                requeued.append(run.id)
    for run_id in requeued:
        log.info("re-queueing run %s interrupted by a server stop", run_id)
        executor.submit(run_id)
    return requeued


class CeleryExecutor:
    """Sends runs to Celery workers; the broker, not the API, re-delivers lost jobs."""

    def submit(self, run_id: int) -> None:
        from workers.tasks import start_task

        start_task.delay(run_id)

    def shutdown(self) -> None:
        """Nothing to stop: the jobs live in the broker and the workers."""


def make_executor() -> Executor:
    if settings.executor == "celery":
        return CeleryExecutor()
    return LocalExecutor(settings.local_workers)
