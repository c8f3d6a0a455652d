"""External backends in the database: a port's uploaded outputs (or a probe page's) stored
as one more finished backend of a run, `ext:<name>`, and compared on arrival.

An external backend joins a finished run: it is compared with the run's reference and
with every backend the run was compared against, exactly like a built-in backend,
so its rows, drift start, CSV, aggregates and dashboards are the ordinary ones.
Uploading the same name again replaces that mode's outputs and their rows.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from app.core.config import settings
from app.core.db import session_scope
from app.core.errors import Conflict, InvalidRequest, OutputsExpired
from app.data import divergences, storage
from app.data.orm import BackendRun, Run, utcnow
from app.data.runs import get_run
from workers.diagnosis.runs import first_samples
from workers.engine.compare import Diagnoser, compare
from workers.engine.explanations import LayerDiagnosis
from workers.engine.external import read_external_outputs
from workers.engine.json_safe import jsonable
from workers.engine.results import BackendResult, Mode
from workers.engine.status import BackendStatus, RunStatus
from workers.inspection import InspectionFailed, ModelInspector

log = logging.getLogger(__name__)


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
    inspector: ModelInspector,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check the upload, store it as `backend` of the run (replacing that mode's earlier
    outputs), compare and diagnose it, and return the backend run's record."""
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
    _compare_external(run_id, backend, inspector)
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


def _diagnoser(
    run_id: int, backend: str, results: dict[str, BackendResult], inspector: ModelInspector
) -> Diagnoser | None:
    """The external backend's diagnosis, computed by the model parser's child from its
    first samples and the reference's (the API process never loads the model)."""
    if settings.diagnosis_budget_s <= 0:
        return None
    with session_scope() as session:
        run = get_run(session, run_id)
        model = storage.model_path(run.model.sha256, run.model.file_format)
        input_set = next(s for s in run.model.input_sets if s.id == run.input_set_id)
        inputs = storage.load_inputs(input_set.sha256)
        reference = run.reference
    candidate = results[backend].outputs
    fed = {**first_samples(inputs), **first_samples(results[reference].outputs["accumulated"])}
    samples = {mode: first_samples(layers) for mode, layers in candidate.items()}
    timeout_s = settings.inspect_timeout_s + settings.diagnosis_budget_s
    with tempfile.TemporaryDirectory() as folder:
        candidate_path, fed_path = Path(folder, "candidate.npz"), Path(folder, "fed.npz")
        # Prefixed keys: a layer named like one of savez's own arguments stays a key.
        _save(candidate_path, {f"{m}/{k}": v for m, ls in samples.items() for k, v in ls.items()})
        _save(fed_path, {f"fed/{name}": value for name, value in fed.items()})
        try:
            found = inspector.diagnose(
                model, candidate_path, fed_path, sorted(candidate), timeout_s
            )
        except InspectionFailed as error:  # stored and compared all the same, undiagnosed
            log.warning("diagnosing %s of run %s failed: %s", backend, run_id, error)
            return None
    diagnosed = {
        mode: {layer: LayerDiagnosis.from_dict(values) for layer, values in layers.items()}
        for mode, layers in found.items()
    }
    return lambda name, mode: diagnosed.get(mode, {}) if name == backend else {}


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as stream:
        np.savez(stream, **arrays)


def _compare_external(run_id: int, backend: str, inspector: ModelInspector) -> None:
    """The external backend against the reference and every backend the run was compared
    against, in each mode it has, diagnosed once; its rows replace its earlier ones."""
    with session_scope() as session:
        run = get_run(session, run_id)
        against_all = [run.reference, *divergences.compared_against(session, run_id)]
    stored = divergences.stored_run(run_id)
    assert stored is not None
    diagnose = _diagnoser(run_id, backend, stored.results, inspector)
    targets = [t for t in dict.fromkeys(against_all) if t != backend and t in stored.results]
    comparisons = [
        comparison
        for against in targets
        for comparison in compare(
            stored.graph,
            stored.results,
            against=against,
            modes=tuple(stored.results[backend].outputs),
            options=settings.engine_options(),
            diagnose=diagnose,
            backends=[backend],
        )
    ]
    divergences.replace_divergences(
        run_id=run_id, replaced={t: [backend] for t in targets}, comparisons=comparisons
    )


def refuse_unknown_mode(mode: str) -> Mode:
    if mode not in ("accumulated", "isolated"):
        raise InvalidRequest(f"mode {mode!r} must be 'accumulated' or 'isolated'")
    return mode  # type: ignore[return-value]
