"""/api/runs: start runs, read their status, divergences and layer outputs, and ask for
comparisons against other backends."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from app.api.deps import Limit, RowId, RowIdFilter, SessionDep, Skip
from app.backend_status import backend_statuses
from app.core.config import settings
from app.core.db import session_factory
from app.core.errors import Conflict, InvalidRequest, NotFound, OutputsExpired
from app.data import divergences, runs, storage, uploads
from app.data.orm import Run
from app.schemas import (
    ComparisonCreate,
    ComparisonPublic,
    ComparisonsPublic,
    DivergencePublic,
    ErrorPublic,
    ModeName,
    RunCreate,
    RunPublic,
    RunsPublic,
)
from workers.backends.registry import DEFAULT_BACKENDS, backend_entry, comparable_backend
from workers.engine.status import BackendStatus

router = APIRouter(prefix="/runs", tags=["runs"])
OUTPUTS_EXPIRED = {
    "model": ErrorPublic,
    "description": "The layer outputs this needs were deleted (DRIFTBENCH_OUTPUT_RETENTION_DAYS)",
}


@router.post("", response_model=RunPublic, status_code=202)
def create_run(session: SessionDep, request: Request, body: RunCreate) -> Run:
    """Queue a run; 202 with its id. Backends default to every available one of the
    default set (all but keras-jax and the TFLite forms)."""
    model = uploads.get_model(session, body.model_id)
    input_set = uploads.get_input_set(session, model=model, input_set_id=body.input_set_id)
    # Asked only where they decide something (1.3 ms on every run's way): a default set
    # is the available backends, and Celery refuses one no worker can run. The embedded
    # executor runs what was named; a backend that cannot run says why in its own row.
    statuses = backend_statuses() if body.backends is None or settings.executor == "celery" else {}
    backends = (
        body.backends
        if body.backends is not None
        else [
            backend
            for backend, status in statuses.items()
            if status["available"] and backend in DEFAULT_BACKENDS
        ]
    )
    for backend in [body.reference, *backends]:
        backend_entry(backend)
        if settings.executor == "celery" and not statuses[backend]["available"]:
            raise InvalidRequest(f"backend {backend} cannot run: {statuses[backend]['reason']}")
    compare_against = (
        body.compare_against
        if body.compare_against is not None
        else [b for b in ["keras-cpu"] if b in backends and b != body.reference]
    )
    for against in compare_against:
        backend_entry(against)
        if against not in backends or against == body.reference:
            raise InvalidRequest(
                f"compare_against {against!r} must be one of the run's backends other "
                f"than its reference {body.reference!r} (backends: {', '.join(backends)})"
            )
    if body.repeats > settings.max_repeats:
        raise InvalidRequest(
            f"repeats {body.repeats} is over the limit of {settings.max_repeats} "
            "(DRIFTBENCH_MAX_REPEATS)"
        )
    run = runs.create_run(
        session,
        model=model,
        input_set=input_set,
        reference=body.reference,
        backends=backends,
        modes=list(body.modes),
        repeats=body.repeats,
        compare_against=compare_against,
    )
    request.app.state.executor.submit(run.id)
    return run


@router.get("", response_model=RunsPublic)
def list_runs(
    session: SessionDep, model_id: RowIdFilter = None, skip: Skip = 0, limit: Limit = 100
) -> dict[str, Any]:
    count, found = runs.list_runs(session, model_id=model_id, skip=skip, limit=limit)
    return {"count": count, "data": found}


MAX_WAIT_S = 60.0
WaitS = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_S,
        description="wait up to this many seconds for the run to be done or failed",
    ),
]


def _published_run(run_id: int) -> RunPublic:
    with session_factory()() as session:
        return RunPublic.model_validate(runs.get_run(session, run_id))


@router.get("/{run_id}", response_model=RunPublic)
async def read_run(request: Request, run_id: RowId, wait_s: WaitS = 0.0) -> RunPublic:
    """The run; with `wait_s`, answered as soon as it is done or failed, or with how it
    stands after `wait_s` seconds: a client sees the end as it happens without polling
    (at once when the embedded executor ends it, within 0.25 s under Celery). The
    wait holds no worker thread, and ends with the client."""
    ends = request.app.state.executor.ends
    deadline = time.monotonic() + wait_s
    while True:
        with ends.watching(run_id) as ended:
            run = await run_in_threadpool(_published_run, run_id)
            left = deadline - time.monotonic()
            if run.status.is_final or left <= 0 or await request.is_disconnected():
                return run
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), min(left, ends.recheck_s))


@router.get("/{run_id}/comparisons", response_model=ComparisonsPublic)
def list_comparisons(session: SessionDep, run_id: RowId) -> dict[str, Any]:
    """The backends this run has been compared against (its reference once it is done)."""
    runs.get_run(session, run_id)
    return {"run_id": run_id, "against": divergences.compared_against(session, run_id)}


@router.post(
    "/{run_id}/comparisons",
    response_model=ComparisonPublic,
    status_code=201,
    responses={409: {"model": ErrorPublic, "description": "The run has not finished"}},
)
def create_comparison(request: Request, run_id: RowId, body: ComparisonCreate) -> dict[str, Any]:
    """Compare every finished backend of a finished run with `against`, from the stored
    outputs, in a supervised job process, and store the rows (replacing an earlier
    comparison with the same backend); then read them with GET /divergence?against=..."""
    comparable_backend(body.against)
    divergences.check_comparable(run_id=run_id, against=body.against)
    request.app.state.executor.compare(run_id, body.against)
    return {"run_id": run_id, "against": body.against}


@router.get(
    "/{run_id}/divergence",
    response_model=DivergencePublic,
    responses={
        200: {"content": {"text/csv": {}}},
        409: {"model": ErrorPublic, "description": "Not compared against that backend yet"},
    },
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
    run = runs.get_run(session, run_id)
    against = against or run.reference
    for name in filter(None, (against, backend)):
        comparable_backend(name)
    if mode not in run.modes and not divergences.has_mode(session, run.id, mode):
        raise InvalidRequest(f"run {run_id} did not run mode {mode!r} (modes: {run.modes})")
    rows = divergences.read_rows(session, run, against=against, mode=mode, backend=backend)
    if format == "csv":
        return PlainTextResponse(divergences.rows_csv(rows), media_type="text/csv")
    return {
        "run_id": run.id,
        "against": against,
        "mode": mode,
        "drift_start": divergences.drift_starts(rows),
        "not_provided": divergences.not_provided(rows, divergences.stored_graph(run.model)),
        "rows": [divergences.row_dict(row) for row in rows],
    }


LAYER_FILE = {
    200: {
        "content": {"application/octet-stream": {}},
        "description": "the layer's output as a .npy file",
    },
    410: OUTPUTS_EXPIRED,
}


@router.get("/{run_id}/output", responses=LAYER_FILE)
def download_output_by_query(
    session: SessionDep,
    run_id: RowId,
    backend: Annotated[str, Query(max_length=200)],
    layer: Annotated[str, Query(max_length=400)],
    mode: ModeName = "accumulated",
) -> Response:
    """The same file, named by query parameters: a nested layer (`base/conv`) or a probe
    backend (`ext:probe/<device>/<backend>`) has a slash no path segment can carry."""
    return download_output(session, run_id, backend, layer, mode)


@router.get("/{run_id}/outputs/{backend}/{layer}", responses=LAYER_FILE)
def download_output(
    session: SessionDep, run_id: RowId, backend: str, layer: str, mode: ModeName = "accumulated"
) -> Response:
    run = runs.get_run(session, run_id)
    backend_run = next((b for b in run.backend_runs if b.backend == backend), None)
    if backend_run is None:
        raise NotFound(f"backend of run {run_id}", backend)
    if backend_run.outputs_expired_at is not None:
        raise OutputsExpired(
            run_id, backend, backend_run.outputs_expired_at, settings.output_retention_days
        )
    if backend_run.status != BackendStatus.DONE or backend_run.outputs_path is None:
        raise Conflict(
            f"backend {backend} of run {run_id} has no outputs (status {backend_run.status})"
        )
    array = storage.load_layer_output(storage.outputs_path(run.id, backend), mode, layer)
    if array is None:
        raise NotFound(f"{mode} output of layer", repr(layer))
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    filename = f"run{run_id}-{backend}-{layer}-{mode}.npy"
    return Response(
        buffer.getvalue(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
