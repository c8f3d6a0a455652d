"""/api/runs: start runs, read their status, divergences and layer outputs."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select

from app import storage
from app.api.deps import Limit, RowId, RowIdFilter, SessionDep, Skip
from app.backend_status import backend_statuses
from app.config import settings
from app.errors import ApiError, OutputsExpired, not_found
from app.models import BackendRun, InputSet, Model, Run
from app.run_results import divergence_rows, drift_starts, ensure_comparison, row_dict, rows_csv
from app.schemas import (
    DivergencePublic,
    ErrorPublic,
    ModeName,
    RunCreate,
    RunPublic,
    RunsPublic,
)
from workers.runners import runner_class

router = APIRouter(prefix="/runs", tags=["runs"])
OUTPUTS_EXPIRED = {
    "model": ErrorPublic,
    "description": "The layer outputs this needs were deleted (DRIFTBENCH_OUTPUT_RETENTION_DAYS)",
}


@router.post("", response_model=RunPublic, status_code=202)
def create_run(session: SessionDep, request: Request, body: RunCreate) -> Run:
    """Queue a run; 202 with its id. Backends default to every available one."""
    model = session.get(Model, body.model_id)
    if model is None:
        raise not_found("model", body.model_id)
    input_set = session.get(InputSet, body.input_set_id)
    if input_set is None or input_set.model_id != model.id:
        raise not_found(f"input set of model {model.id}", body.input_set_id)
    statuses = backend_statuses()
    backends = (
        body.backends
        if body.backends is not None
        else [backend for backend, status in statuses.items() if status["available"]]
    )
    for backend in [body.reference, *backends]:
        runner_class(backend)
        if settings.executor == "celery" and not statuses[backend]["available"]:
            raise ApiError(422, f"backend {backend} cannot run: {statuses[backend]['reason']}")
    if body.repeats > settings.max_repeats:
        raise ApiError(
            422,
            f"repeats {body.repeats} is over the limit of {settings.max_repeats} "
            "(DRIFTBENCH_MAX_REPEATS)",
        )
    ordered = list(dict.fromkeys([body.reference, *backends]))
    run = Run(
        model_id=model.id,
        input_set_id=input_set.id,
        reference=body.reference,
        modes=list(dict.fromkeys(body.modes)),
        repeats=body.repeats,
        backend_runs=[BackendRun(backend=backend) for backend in ordered],
    )
    session.add(run)
    session.commit()
    request.app.state.executor.submit(run.id)
    return run


@router.get("", response_model=RunsPublic)
def list_runs(
    session: SessionDep, model_id: RowIdFilter = None, skip: Skip = 0, limit: Limit = 100
) -> dict[str, Any]:
    query = select(Run)
    if model_id is not None:
        query = query.filter_by(model_id=model_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    runs = session.scalars(query.order_by(Run.id.desc()).offset(skip).limit(limit)).all()
    return {"count": count, "data": runs}


def get_run_or_404(session: SessionDep, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise not_found("run", run_id)
    return run


@router.get("/{run_id}", response_model=RunPublic)
def read_run(session: SessionDep, run_id: RowId) -> Run:
    return get_run_or_404(session, run_id)


@router.get(
    "/{run_id}/divergence",
    response_model=DivergencePublic,
    responses={200: {"content": {"text/csv": {}}}, 410: OUTPUTS_EXPIRED},
)
def read_divergence(
    session: SessionDep,
    run_id: RowId,
    against: Annotated[str | None, Query(description="default: the run's reference")] = None,
    mode: ModeName = "accumulated",
    backend: str | None = None,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """One row per backend x layer with every metric and the verdict, and where drift starts."""
    run = get_run_or_404(session, run_id)
    against = against or run.reference
    for name in filter(None, (against, backend)):
        runner_class(name)
    if mode not in run.modes:
        raise ApiError(422, f"run {run_id} did not run mode {mode!r} (modes: {run.modes})")
    ensure_comparison(session, run, against)
    rows = divergence_rows(session, run, against=against, mode=mode, backend=backend)
    if format == "csv":
        return PlainTextResponse(rows_csv(rows), media_type="text/csv")
    return {
        "run_id": run.id,
        "against": against,
        "mode": mode,
        "drift_start": drift_starts(rows),
        "rows": [row_dict(row) for row in rows],
    }


@router.get(
    "/{run_id}/outputs/{backend}/{layer}",
    responses={
        200: {
            "content": {"application/octet-stream": {}},
            "description": "the layer's output as a .npy file",
        },
        410: OUTPUTS_EXPIRED,
    },
)
def download_output(
    session: SessionDep, run_id: RowId, backend: str, layer: str, mode: ModeName = "accumulated"
) -> Response:
    run = get_run_or_404(session, run_id)
    backend_run = next((b for b in run.backend_runs if b.backend == backend), None)
    if backend_run is None:
        raise not_found(f"backend of run {run_id}", backend)
    if backend_run.outputs_expired_at is not None:
        raise OutputsExpired(backend_run)
    if backend_run.status != "done" or backend_run.outputs_path is None:
        raise ApiError(
            409, f"backend {backend} of run {run_id} has no outputs (status {backend_run.status})"
        )
    array = storage.load_layer_output(storage.outputs_path(run.id, backend), mode, layer)
    if array is None:
        raise not_found(f"{mode} output of layer", repr(layer))
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    filename = f"run{run_id}-{backend}-{layer}-{mode}.npy"
    return Response(
        buffer.getvalue(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
