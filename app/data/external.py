"""External backends in the database: a port's uploaded outputs (or a probe page's) stored
as one more finished backend of a run, `ext:<name>`, and compared on arrival.

An external backend joins a finished run: it is compared with the run's reference and
with every backend the run was compared against, exactly like a built-in backend,
so its rows, drift start, CSV, aggregates and dashboards are the ordinary ones.
Uploading the same name again replaces that mode's outputs and their rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.core.config import settings
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidRequest, OutputsExpired
from app.data import divergences, storage
from app.data.orm import BackendRun, Run, utcnow
from app.data.runs import get_run
from workers.engine.compare import compare
from workers.engine.external import read_external_outputs
from workers.engine.json_safe import jsonable
from workers.engine.results import Mode
from workers.engine.status import BackendStatus, RunStatus


def _reference_shapes(run: Run) -> dict[str, tuple[int, ...]]:
    """Each node's output shape for the run's whole input batch, from the reference."""
    reference = next((b for b in run.backend_runs if b.backend == run.reference), None)
    if reference is None or reference.status != BackendStatus.DONE:
        raise Conflict(
            f"run {run.id}'s reference {run.reference} did not finish; external outputs are "
            "compared with it"
        )
    if reference.outputs_path is None:
        raise OutputsExpired(
            run.id, run.reference, reference.outputs_expired_at, settings.output_retention_days
        )
    stored = storage.stored_shapes(storage.outputs_path(run.id, run.reference))["accumulated"]
    input_set = next(s for s in run.model.input_sets if s.id == run.input_set_id)
    batch = int(next(iter(input_set.shapes.values()))[0])
    return {layer: (batch, *shape[1:]) for layer, shape in stored.items()}


def check_run_takes_external(run_id: int) -> dict[str, tuple[int, ...]]:
    """The node shapes an external upload must match; Conflict while the run is not done."""
    with session_scope() as session:
        run = get_run(session, run_id)
        if run.status != RunStatus.DONE:
            raise Conflict(f"run {run_id} is {run.status}; add external outputs once it is done")
        return _reference_shapes(run)


def store_external(
    *,
    run_id: int,
    backend: str,
    mode: Mode,
    upload: Path,
    note: str | None,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check the upload, store it as `backend` of the run (replacing that mode's earlier
    outputs), compare it, and return the backend run's record."""
    expected = check_run_takes_external(run_id)
    arrays = read_external_outputs(upload, expected, settings.max_stored_output_bytes)
    with session_scope() as session:
        run = get_run(session, run_id)
        existing = next((b for b in run.backend_runs if b.backend == backend), None)
        outputs: dict[str, dict[str, np.ndarray]] = {}
        if existing is not None and existing.outputs_path is not None:
            outputs = storage.load_outputs(storage.outputs_path(run_id, backend))
        outputs[mode] = arrays
        path = storage.store_outputs(run_id, backend, outputs)
        if existing is None:
            existing = BackendRun(run_id=run_id, backend=backend, attempts=1)
            session.add(existing)
        existing.status = BackendStatus.DONE
        existing.reason = None
        existing.outputs_path = str(path)
        existing.outputs_expired_at = None
        existing.started_at = existing.started_at or utcnow()
        existing.finished_at = utcnow()
        existing.timings = {}
        existing.environment = jsonable(
            {
                "external": True,
                "note": note,
                "modes": {m: sorted(layers) for m, layers in outputs.items()},
                "dtypes": {m: _dtypes(layers) for m, layers in outputs.items()},
                **(environment or {}),
            }
        )
    _compare_external(run_id, backend)
    with session_scope() as session:
        run = get_run(session, run_id)
        stored = next(b for b in run.backend_runs if b.backend == backend)
        return {
            "run_id": run_id,
            "backend": backend,
            "status": stored.status,
            "environment": stored.environment,
        }


def _dtypes(layers: dict[str, np.ndarray]) -> list[str]:
    return sorted({str(array.dtype) for array in layers.values()})


def _compare_external(run_id: int, backend: str) -> None:
    """The external backend against the reference and every backend the run was compared
    against, in each mode it has; its rows replace its earlier ones."""
    with session_scope() as session:
        run = get_run(session, run_id)
        against_all = [run.reference, *divergences.compared_against(session, run_id)]
    stored = divergences.stored_run(run_id)
    assert stored is not None
    for against in dict.fromkeys(against_all):
        if against == backend or against not in stored.results:
            continue
        pair = {against: stored.results[against], backend: stored.results[backend]}
        comparisons = compare(
            stored.graph,
            pair,
            against=against,
            modes=tuple(stored.results[backend].outputs),
            options=settings.engine_options(),
        )
        divergences.replace_divergences(
            run_id=run_id, against=against, comparisons=comparisons, backend=backend
        )


def refuse_unknown_mode(mode: str) -> Mode:
    if mode not in ("accumulated", "isolated"):
        raise InvalidRequest(f"mode {mode!r} must be 'accumulated' or 'isolated'")
    return mode  # type: ignore[return-value]
