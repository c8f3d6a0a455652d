"""Celery tasks: they take ids, re-read the database, and run the same jobs as the
embedded executor (workers/jobs.py), in the order `RunOrder.after` gives.

The worker process is the supervisor: each job runs in its warm job process, so a
job that crashes or is killed fails its backend once, with the reason, and the task
is acknowledged; only a worker that dies itself gets its job delivered again.
"""

from __future__ import annotations

from functools import cache

from celery.exceptions import Reject
from celery.signals import worker_shutdown

from workers import jobs
from workers.celery_app import BACKEND_TASK, FINALIZE_TASK, START_TASK, celery
from workers.engine.sequence import Step
from workers.processes.supervisor import JobProcesses, ShuttingDown


@cache
def worker_job_processes() -> JobProcesses:
    """This worker's job processes (one per capability: the worker takes one job at a time)."""
    processes = jobs.job_processes()
    worker_shutdown.connect(lambda **_: processes.close(), weak=False)
    return processes


def _enqueue(run_id: int, steps: list[Step]) -> None:
    for step in steps:
        if step.backend is None:
            finalize_task.delay(run_id)
        else:
            backend_task.delay(run_id, step.backend)


@celery.task(name=START_TASK)
def start_task(run_id: int) -> None:
    _enqueue(run_id, jobs.first_steps(run_id))


def _run_step(run_id: int, step: Step) -> None:
    try:
        jobs.supervised_step(worker_job_processes(), run_id, step)
    except ShuttingDown as stopping:
        raise Reject(str(stopping), requeue=True) from None


@celery.task(name=BACKEND_TASK)
def backend_task(run_id: int, backend: str) -> None:
    step = Step(backend)
    _run_step(run_id, step)
    _enqueue(run_id, jobs.steps_after(run_id, step))


@celery.task(name=FINALIZE_TASK)
def finalize_task(run_id: int) -> None:
    _run_step(run_id, Step())
