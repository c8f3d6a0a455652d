"""Celery tasks: they take ids, re-read the database, and call the same job functions
as the embedded executor (start_run, supervised_backend, supervised_finalize).

The worker process is the supervisor: each job runs in its warm job process, so a
job that crashes or is killed fails its backend once, with the reason, and the task
is acknowledged; only a worker that dies itself gets its job delivered again.
"""

from __future__ import annotations

from functools import cache

from celery.exceptions import Reject
from celery.signals import worker_shutdown
from sqlalchemy import update

from app.db import session_scope
from app.models import Run
from workers.celery_app import BACKEND_TASK, FINALIZE_TASK, START_TASK, celery
from workers.job_process import JobProcesses, ShuttingDown
from workers.run_job import (
    FINAL_STATUSES,
    job_limits,
    start_run,
    supervised_backend,
    supervised_finalize,
)


@cache
def job_processes() -> JobProcesses:
    """This worker's job processes (one per capability: the worker takes one job at a time)."""
    processes = JobProcesses(job_limits())
    worker_shutdown.connect(lambda **_: processes.close(), weak=False)
    return processes


def _enqueue_backend(run_id: int, backend: str) -> None:
    backend_task.delay(run_id, backend)


@celery.task(name=START_TASK)
def start_task(run_id: int) -> None:
    plan = start_run(run_id)
    if plan is not None:
        _enqueue_backend(run_id, plan.reference)


def _claim_finalization(run_id: int) -> bool:
    """True for exactly one caller once every backend of the run has finished."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None or any(b.status not in FINAL_STATUSES for b in run.backend_runs):
            return False
        claimed = session.execute(
            update(Run).where(Run.id == run_id, Run.status == "running").values(status="finalizing")
        )
        return claimed.rowcount == 1


@celery.task(name=BACKEND_TASK)
def backend_task(run_id: int, backend: str) -> None:
    try:
        supervised_backend(job_processes(), run_id, backend)
    except ShuttingDown as stopping:
        raise Reject(str(stopping), requeue=True) from None
    with session_scope() as session:
        run = session.get(Run, run_id)
        others = (
            []
            if run is None or backend != run.reference
            else [
                b.backend
                for b in run.backend_runs
                if b.backend != run.reference and b.status == "queued"
            ]
        )
    for other in others:
        _enqueue_backend(run_id, other)
    if _claim_finalization(run_id):
        finalize_task.delay(run_id)


@celery.task(name=FINALIZE_TASK)
def finalize_task(run_id: int) -> None:
    try:
        supervised_finalize(job_processes(), run_id)
    except ShuttingDown as stopping:
        raise Reject(str(stopping), requeue=True) from None
