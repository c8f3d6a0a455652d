"""Runs and backend runs in the database: creating and listing them, and every state
change a job makes. Each function owns its transaction; callers pass ids and
keyword arguments, never sessions they keep."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.errors import NotFound
from app.data import drift_cache, storage
from app.data.orm import BackendRun, InputSet, LayerDivergence, Run, StoredModel, utcnow
from app.data.pages import page
from workers.engine.external import is_external
from workers.engine.json_safe import jsonable
from workers.engine.results import BackendResult, Mode
from workers.engine.sequence import RunOrder
from workers.engine.status import BackendStatus, RunStatus

log = logging.getLogger(__name__)
# A backend run in one of these with an outputs path has its outputs stored: finished, or
# being compared on arrival (`record_stored`).
STORED_STATUSES = (BackendStatus.RUNNING, BackendStatus.DONE)


def create_run(
    session: Session,
    *,
    model: StoredModel,
    input_set: InputSet,
    reference: str,
    backends: list[str],
    modes: list[str],
    repeats: int,
    compare_against: list[str],
) -> Run:
    order = RunOrder.of(reference, backends)
    run = Run(
        model_id=model.id,
        input_set_id=input_set.id,
        reference=reference,
        modes=list(dict.fromkeys(modes)),
        repeats=repeats,
        compare_against=list(dict.fromkeys(compare_against)),
        backend_runs=[BackendRun(backend=backend) for backend in order.backends],
    )
    session.add(run)
    session.commit()
    return run


def list_runs(
    session: Session, *, model_id: int | None, skip: int, limit: int
) -> tuple[int, list[Run]]:
    query = select(Run)
    if model_id is not None:
        query = query.filter_by(model_id=model_id)
    return page(session, query, order_by=Run.id.desc(), skip=skip, limit=limit)


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound("run", run_id)
    return run


def recover_interrupted_runs(*, max_attempts: int) -> list[int]:
    """Re-queue or fail the runs a stopped server left queued or running; returns the
    ids to submit again."""
    requeued = []
    with session_scope() as session:
        unfinished_runs = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMPARING)
        runs = session.scalars(select(Run).where(Run.status.in_(unfinished_runs))).all()
        for run in runs:
            unfinished = [b for b in run.backend_runs if not BackendStatus(b.status).is_final]
            if run.attempts >= max_attempts:
                reason = (
                    f"interrupted: the server stopped during this run "
                    f"{run.attempts} time(s), the limit of DRIFTBENCH_JOB_ATTEMPTS"
                )
                run.status, run.error, run.finished_at = RunStatus.FAILED, reason, utcnow()
                for backend_run in unfinished:
                    backend_run.status, backend_run.reason = BackendStatus.FAILED, reason
                    _forget_comparisons(session, run, backend_run.backend)
            else:
                run.status = RunStatus.QUEUED
                for backend_run in unfinished:
                    backend_run.status = BackendStatus.QUEUED
                requeued.append(run.id)
    return requeued


@dataclass(frozen=True)
class RunPlan:
    """What a job needs to know about its run, read once from the database."""

    run_id: int
    model_path: Path
    inputs_sha256: str
    order: RunOrder
    modes: tuple[Mode, ...]
    repeats: int
    compare_against: tuple[str, ...]


def load_plan(run_id: int) -> RunPlan | None:
    """Two statements, not the ORM's four (the run, its input set, model and backend runs
    each loaded on access): every job of a run reads its plan first."""
    with session_scope() as session:
        row = session.execute(
            select(Run, StoredModel.sha256, StoredModel.file_format, InputSet.sha256)
            .join(StoredModel, Run.model_id == StoredModel.id)
            .join(InputSet, Run.input_set_id == InputSet.id)
            .where(Run.id == run_id)
        ).one_or_none()
        if row is None:
            return None
        run, model_sha256, file_format, inputs_sha256 = row
        backends = session.scalars(
            select(BackendRun.backend).where(BackendRun.run_id == run_id).order_by(BackendRun.id)
        )
        return RunPlan(
            run_id=run.id,
            model_path=storage.model_path(model_sha256, file_format),
            inputs_sha256=inputs_sha256,
            order=RunOrder.of(
                run.reference,
                [backend for backend in backends if not is_external(backend)],
                feeds="isolated" in run.modes,
            ),
            modes=tuple(run.modes),
            repeats=run.repeats,
            compare_against=tuple(run.compare_against or ()),
        )


def start_run(run_id: int) -> RunPlan | None:
    """Mark the run running (one more attempt); None when it no longer exists."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            log.warning("run %s vanished before it started", run_id)
            return None
        run.status = RunStatus.RUNNING
        run.attempts += 1
        run.error = None
    return load_plan(run_id)


def backend_statuses(run_id: int) -> dict[str, str]:
    with session_scope() as session:
        rows = session.execute(
            select(BackendRun.backend, BackendRun.status).filter_by(run_id=run_id)
        ).all()
        return {backend: status for backend, status in rows}


def _backend_run(session: Session, run_id: int, backend: str) -> BackendRun | None:
    return session.scalars(
        select(BackendRun).filter_by(run_id=run_id, backend=backend)
    ).one_or_none()


def claim_backend(run_id: int, backend: str, *, max_attempts: int) -> BackendStatus | None:
    """Mark the backend running for one more attempt, or say why it must not run: its
    final status when it has one (already finished, or out of attempts), None when the
    run is gone. A job delivered again after its worker died finds its attempts
    counted: past `max_attempts` it fails with the reason instead of running again."""
    with session_scope() as session:
        backend_run = _backend_run(session, run_id, backend)
        if backend_run is None:
            return None
        status = BackendStatus(backend_run.status)
        if status.is_final:
            return status
        if backend_run.attempts >= max_attempts:
            backend_run.status = BackendStatus.FAILED
            backend_run.reason = (
                f"gave up after {backend_run.attempts} attempts: the worker "
                "running it stopped each time (DRIFTBENCH_JOB_ATTEMPTS)"
            )
            backend_run.finished_at = utcnow()
            _forget_comparisons(session, backend_run.run, backend)
            return BackendStatus.FAILED
        backend_run.status = BackendStatus.RUNNING
        backend_run.attempts += 1
        backend_run.started_at = utcnow()
        backend_run.outputs_path = None  # what an interrupted attempt stored is not this one's
        return BackendStatus.RUNNING


def record_stored(
    run_id: int,
    backend: str,
    outputs_path: Path,
    environment: dict[str, Any],
    *,
    result: BackendResult | None = None,
    note: str | None = None,
) -> list[str] | None:
    """Record the backend's outputs as stored, with the environment its outputs are
    judged by (a quantized backend's output scales), before it is compared on arrival,
    and return the run's backends recorded stored before it (None when the run is gone).
    With `result`, everything else its job recorded but its final status too (a job
    that hands its comparison on records nothing more).

    Of any two backends of a run exactly one sees the other here, the one recorded
    second, and it compares the pair: the run's row is locked first, so these calls
    take turns on PostgreSQL, and their first write takes SQLite's one write lock.
    Deciding by "recorded finished" instead left the pair of a target and a backend
    arriving while the target was being compared to neither of them, for the run's
    last step: 50 ms at the end of every dense10x50 run of seven backends, now 16.
    """
    values = {} if result is None else _result_values(result, outputs_path, note)
    values |= {"outputs_path": str(outputs_path), "environment": jsonable(environment)}
    with session_scope() as session:
        # FOR NO KEY UPDATE: these calls wait for each other, rows inserted meanwhile
        # (their foreign key locks the run's row for key share) do not.
        locked = select(Run.id).where(Run.id == run_id).with_for_update(key_share=True)
        if session.scalar(locked) is None:
            return None
        session.execute(
            update(BackendRun)
            .where(BackendRun.run_id == run_id, BackendRun.backend == backend)
            .values(values)
        )
        earlier = select(BackendRun.backend).where(
            BackendRun.run_id == run_id,
            BackendRun.backend != backend,
            BackendRun.outputs_path.is_not(None),
            BackendRun.status.in_(STORED_STATUSES),
        )
        return list(session.scalars(earlier))


def _result_values(
    result: BackendResult, outputs_path: Path | None, note: str | None
) -> dict[str, Any]:
    """A backend run's columns as its job's result sets them, but its final status."""
    return {
        "reason": "; ".join(filter(None, (result.reason, note))) or None,
        "environment": jsonable(result.environment),
        "timings": result.timings,
        "deterministic": result.deterministic,
        "repeat_spread": result.repeat_spread,
        "outputs_path": str(outputs_path) if outputs_path else None,
        "outputs_expired_at": None,  # a re-run stores them anew
    }


def record_result(
    run_id: int, result: BackendResult, *, outputs_path: Path | None, note: str | None
) -> BackendStatus:
    with session_scope() as session:
        session.execute(
            update(BackendRun)
            .where(BackendRun.run_id == run_id, BackendRun.backend == result.backend)
            .values(
                _result_values(result, outputs_path, note)
                | {"status": result.status, "finished_at": utcnow()}
            )
        )
    return result.status


def record_compared(run_id: int, backend: str, compare_s: float | None) -> BackendStatus | None:
    """A backend whose comparison on arrival was handed on, recorded finished once it has
    been compared (`compare_s`: what comparing took; None when it failed). One that
    failed meanwhile keeps that status; None when the run is gone."""
    with session_scope() as session:
        backend_run = _backend_run(session, run_id, backend)
        if backend_run is None:
            return None
        if BackendStatus(backend_run.status) != BackendStatus.RUNNING:
            return BackendStatus(backend_run.status)
        backend_run.status = BackendStatus.DONE
        backend_run.finished_at = utcnow()
        if compare_s is not None:
            backend_run.timings = {**backend_run.timings, "compare": compare_s}
        return BackendStatus.DONE


def _forget_comparisons(session: Session, run: Run, backend: str) -> None:
    """Delete the rows a backend that is failing was compared in: nothing is reported of
    a failed backend but its reason. The scopes' locks first, as a comparison storing
    rows takes them: rows it stored before are deleted here, and it drops them after
    (app/data/divergences.py, replace_divergences)."""
    drift_cache.bump(session, run.model_id, run.model.architecture)
    session.execute(
        delete(LayerDivergence).where(
            LayerDivergence.run_id == run.id,
            or_(LayerDivergence.backend == backend, LayerDivergence.against == backend),
        )
    )


def record_failure(run_id: int, backend: str, reason: str) -> BackendStatus | None:
    """A backend job that ended outside its runner (its process died, the job raised);
    returns the backend's status as recorded (None if its run is gone).

    A backend that had already finished keeps its result (the process died after it
    was stored); otherwise any outputs file it left without a database record goes, and
    so do the rows it was compared in (on arrival, by itself or by a backend recorded
    stored after it).
    """
    with session_scope() as session:
        backend_run = _backend_run(session, run_id, backend)
        if backend_run is None:
            return None
        if BackendStatus(backend_run.status).is_final:
            return BackendStatus(backend_run.status)
        backend_run.status, backend_run.reason = BackendStatus.FAILED, reason
        backend_run.outputs_path = None
        backend_run.finished_at = utcnow()
        _forget_comparisons(session, backend_run.run, backend)
    # Once no backend can list it as stored any more.
    storage.outputs_path(run_id, backend).unlink(missing_ok=True)
    return BackendStatus.FAILED


def claim_comparison(run_id: int) -> bool:
    """True for exactly one caller once every backend of the run has finished: backends
    finishing at once on several workers are each told to compare, one does. One
    statement: loading the backend runs to look at their statuses parsed every one's
    environment and timings (2.6 ms at the end of a seven-backend run)."""
    unfinished = select(BackendRun.id).where(
        BackendRun.run_id == run_id,
        BackendRun.status.in_((BackendStatus.QUEUED, BackendStatus.RUNNING)),
    )
    with session_scope() as session:
        claimed = session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.RUNNING, ~unfinished.exists())
            .values(status=RunStatus.COMPARING)
        )
        return claimed.rowcount == 1


def finish_run(run_id: int) -> None:
    with session_scope() as session:
        session.execute(
            update(Run).where(Run.id == run_id).values(status=RunStatus.DONE, finished_at=utcnow())
        )


def fail_run(run_id: int, reason: str) -> None:
    log.error("run %s failed: %s", run_id, reason)
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is not None:
            run.status, run.error = RunStatus.FAILED, reason
            run.finished_at = utcnow()
