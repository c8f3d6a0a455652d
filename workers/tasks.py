"""Celery tasks: they take ids, re-read the database, and call the same job functions
as the embedded executor (start_run, execute_backend, finalize_run)."""

from __future__ import annotations

from sqlalchemy import update

from app.config import settings
from app.db import session_scope
from app.models import BackendRun, Run
from workers.celery_app import BACKEND_TASK, FINALIZE_TASK, START_TASK, celery
from workers.run_job import FINAL_STATUSES, execute_backend, fail_run, finalize_run, start_run


def _enqueue_backend(run_id: int, backend: str) -> None:
    backend_task.apply_async(
        args=(run_id, backend),
        time_limit=settings.backend_time_limit_s,
        soft_time_limit=max(1, settings.backend_time_limit_s - 10),
    )


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
        execute_backend(run_id, backend)
    except Exception as error:
        with session_scope() as session:
            session.execute(
                update(BackendRun)
                .where(BackendRun.run_id == run_id, BackendRun.backend == backend)
                .values(status="failed", reason=f"{type(error).__name__}: {error}")
            )
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
        finalize_run(run_id)
    except Exception as error:
        fail_run(run_id, error)
