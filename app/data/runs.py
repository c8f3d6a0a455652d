"""Runs and backend runs in the database: creating and listing them, and every state
change a job makes. Each function owns its transaction; callers pass ids and
keyword arguments, never sessions they keep."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, delete, or_, select, update
from sqlalchemy.orm import Session

from app.core.db import connection_scope, session_scope
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
                    _forget_comparisons(session, run.id, backend_run.backend)
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


# The run's columns a job needs, one row per backend run (in the order they were made).
_PLAN = (
    select(
        Run.reference,
        Run.modes,
        Run.repeats,
        Run.compare_against,
        StoredModel.sha256.label("model_sha256"),
        StoredModel.file_format,
        InputSet.sha256.label("inputs_sha256"),
        BackendRun.backend,
    )
    .join(StoredModel, Run.model_id == StoredModel.id)
    .join(InputSet, Run.input_set_id == InputSet.id)
    .outerjoin(BackendRun, BackendRun.run_id == Run.id)
    .where(Run.id == bindparam("run_id"))
    .order_by(BackendRun.id)
)


def load_plan(run_id: int) -> RunPlan | None:
    """One statement, not the ORM's four (the run, its input set, model and backend runs
    each loaded on access): every job of a run reads its plan first."""
    with connection_scope() as connection:
        rows = connection.execute(_PLAN, {"run_id": run_id}).all()
    if not rows:
        return None
    run = rows[0]
    return RunPlan(
        run_id=run_id,
        model_path=storage.model_path(run.model_sha256, run.file_format),
        inputs_sha256=run.inputs_sha256,
        order=RunOrder.of(
            run.reference,
            [row.backend for row in rows if row.backend and not is_external(row.backend)],
            feeds="isolated" in run.modes,
        ),
        modes=tuple(run.modes),
        repeats=run.repeats,
        compare_against=tuple(run.compare_against or ()),
    )


_START = (
    update(Run)
    .where(Run.id == bindparam("run_id"))
    .values(status=RunStatus.RUNNING, attempts=Run.attempts + 1, error=None)
)


def start_run(run_id: int) -> RunPlan | None:
    """Mark the run running (one more attempt); None when it no longer exists."""
    with connection_scope() as connection:
        if connection.execute(_START, {"run_id": run_id}).rowcount == 0:
            log.warning("run %s vanished before it started", run_id)
            return None
    return load_plan(run_id)


_STATUSES = select(BackendRun.backend, BackendRun.status).where(
    BackendRun.run_id == bindparam("run_id")
)


def backend_statuses(run_id: int) -> dict[str, str]:
    with connection_scope() as connection:
        rows = connection.execute(_STATUSES, {"run_id": run_id}).all()
    return {backend: status for backend, status in rows}


# One backend run's row, and what a job sets on it: the parameters other than the
# WHERE clause's name the columns set (a key that names no column is not set).
_BACKEND_RUN = select(
    BackendRun.id, BackendRun.status, BackendRun.attempts, BackendRun.timings
).where(BackendRun.run_id == bindparam("run_id"), BackendRun.backend == bindparam("backend"))
_SET_BACKEND_RUN = update(BackendRun).where(BackendRun.id == bindparam("backend_run_id"))
_SET_BACKEND = update(BackendRun).where(
    BackendRun.run_id == bindparam("of_run"), BackendRun.backend == bindparam("named")
)


def claim_backend(run_id: int, backend: str, *, max_attempts: int) -> BackendStatus | None:
    """Mark the backend running for one more attempt, or say why it must not run: its
    final status when it has one (already finished, or out of attempts), None when the
    run is gone. A job delivered again after its worker died finds its attempts
    counted: past `max_attempts` it fails with the reason instead of running again."""
    with connection_scope() as connection:
        row = connection.execute(_BACKEND_RUN, {"run_id": run_id, "backend": backend}).first()
        if row is None:
            return None
        status = BackendStatus(row.status)
        if status.is_final:
            return status
        if row.attempts >= max_attempts:
            reason = (
                f"gave up after {row.attempts} attempts: the worker "
                "running it stopped each time (DRIFTBENCH_JOB_ATTEMPTS)"
            )
            gave_up = {
                "backend_run_id": row.id,
                "status": BackendStatus.FAILED,
                "reason": reason,
                "finished_at": utcnow(),
            }
            if connection.execute(_SET_BACKEND_RUN, gave_up).rowcount == 0:
                return None  # the run was deleted meanwhile
            _forget_comparisons(connection, run_id, backend)
            return BackendStatus.FAILED
        claimed = connection.execute(
            _SET_BACKEND_RUN,
            {
                "backend_run_id": row.id,
                "status": BackendStatus.RUNNING,
                "attempts": row.attempts + 1,
                "started_at": utcnow(),
                # What an interrupted attempt stored is not this one's.
                "outputs_path": None,
            },
        )
        return BackendStatus.RUNNING if claimed.rowcount else None


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
    with connection_scope() as connection:
        if connection.scalar(_LOCKED_RUN, {"run_id": run_id}) is None:
            return None
        connection.execute(_SET_BACKEND, {"of_run": run_id, "named": backend, **values})
        return list(connection.scalars(_STORED_BEFORE, {"run_id": run_id, "backend": backend}))


# FOR NO KEY UPDATE: `record_stored` calls wait for each other, rows inserted meanwhile
# (their foreign key locks the run's row for key share) do not.
_LOCKED_RUN = select(Run.id).where(Run.id == bindparam("run_id")).with_for_update(key_share=True)
_STORED_BEFORE = select(BackendRun.backend).where(
    BackendRun.run_id == bindparam("run_id"),
    BackendRun.backend != bindparam("backend"),
    BackendRun.outputs_path.is_not(None),
    BackendRun.status.in_(STORED_STATUSES),
)


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
    values = _result_values(result, outputs_path, note)
    with connection_scope() as connection:
        connection.execute(
            _SET_BACKEND,
            {
                "of_run": run_id,
                "named": result.backend,
                **values,
                "status": result.status,
                "finished_at": utcnow(),
            },
        )
    return result.status


def record_compared(run_id: int, backend: str, compare_s: float | None) -> BackendStatus | None:
    """A backend whose comparison on arrival was handed on, recorded finished once it has
    been compared (`compare_s`: what comparing took; None when it failed). One that
    failed meanwhile keeps that status; None when the run is gone."""
    with connection_scope() as connection:
        row = connection.execute(_BACKEND_RUN, {"run_id": run_id, "backend": backend}).first()
        if row is None:
            return None
        if BackendStatus(row.status) != BackendStatus.RUNNING:
            return BackendStatus(row.status)
        values: dict[str, Any] = {"status": BackendStatus.DONE, "finished_at": utcnow()}
        if compare_s is not None:
            values["timings"] = {**row.timings, "compare": compare_s}
        updated = connection.execute(_SET_BACKEND_RUN, {"backend_run_id": row.id, **values})
        return BackendStatus.DONE if updated.rowcount else None


# The run's model and architecture: the drift scopes its rows are stored under.
_SCOPE = (
    select(Run.model_id, StoredModel.architecture)
    .join(StoredModel, Run.model_id == StoredModel.id)
    .where(Run.id == bindparam("run_id"))
)


def run_scope(db: Session | Connection, run_id: int) -> tuple[int, str] | None:
    """The run's model id and architecture (None when the run is gone)."""
    row = db.execute(_SCOPE, {"run_id": run_id}).first()
    return None if row is None else (row.model_id, row.architecture)


def _forget_comparisons(db: Session | Connection, run_id: int, backend: str) -> None:
    """Delete the rows a backend that is failing was compared in: nothing is reported of
    a failed backend but its reason. The scopes' locks first, as a comparison storing
    rows takes them: rows it stored before are deleted here, and it drops them after
    (app/data/divergences.py, replace_divergences)."""
    scope = run_scope(db, run_id)
    if scope is None:
        return
    drift_cache.bump(db, *scope)
    db.execute(
        delete(LayerDivergence).where(
            LayerDivergence.run_id == run_id,
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
    with connection_scope() as connection:
        row = connection.execute(_BACKEND_RUN, {"run_id": run_id, "backend": backend}).first()
        if row is None:
            return None
        if BackendStatus(row.status).is_final:
            return BackendStatus(row.status)
        failed = {
            "backend_run_id": row.id,
            "status": BackendStatus.FAILED,
            "reason": reason,
            "outputs_path": None,
            "finished_at": utcnow(),
        }
        if connection.execute(_SET_BACKEND_RUN, failed).rowcount == 0:
            return None  # the run was deleted meanwhile
        _forget_comparisons(connection, run_id, backend)
    # Once no backend can list it as stored any more.
    storage.outputs_path(run_id, backend).unlink(missing_ok=True)
    return BackendStatus.FAILED


def claim_comparison(run_id: int) -> bool:
    """True for exactly one caller once every backend of the run has finished: backends
    finishing at once on several workers are each told to compare, one does. One
    statement: loading the backend runs to look at their statuses parsed every one's
    environment and timings (2.6 ms at the end of a seven-backend run)."""
    with connection_scope() as connection:
        return connection.execute(_CLAIM_COMPARISON, {"run_id": run_id}).rowcount == 1


_UNFINISHED = select(BackendRun.id).where(
    BackendRun.run_id == bindparam("run_id"),
    BackendRun.status.in_((BackendStatus.QUEUED, BackendStatus.RUNNING)),
)
_CLAIM_COMPARISON = (
    update(Run)
    .where(Run.id == bindparam("run_id"), Run.status == RunStatus.RUNNING, ~_UNFINISHED.exists())
    .values(status=RunStatus.COMPARING)
)
_FINISH = update(Run).where(Run.id == bindparam("run_id"))


def finish_run(run_id: int) -> None:
    with connection_scope() as connection:
        connection.execute(
            _FINISH, {"run_id": run_id, "status": RunStatus.DONE, "finished_at": utcnow()}
        )


def fail_run(run_id: int, reason: str) -> None:
    log.error("run %s failed: %s", run_id, reason)
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is not None:
            run.status, run.error = RunStatus.FAILED, reason
            run.finished_at = utcnow()
