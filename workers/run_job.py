"""The service's job: one stored run, every backend, results into the database.

It takes a run id and re-reads everything else, so the embedded pool and Celery
workers call it the same way. It is idempotent: a re-delivered or restarted run
overwrites its outputs files and replaces its divergence rows, never duplicates.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select

from app import storage
from app.config import settings
from app.db import session_scope
from app.models import BackendRun, InputSet, LayerDivergence, Model, Run, utcnow
from app.report import jsonable
from workers.drift_job import BackendResult, Comparison, compare, run_backends
from workers.metrics import VerdictThresholds
from workers.model_graph import ModelGraph, graph_from_summary
from workers.model_loading import load_artifact

log = logging.getLogger(__name__)


def thresholds() -> VerdictThresholds:
    return VerdictThresholds(
        rounding=settings.verdict_rounding_rel_l2,
        reduced_precision=settings.verdict_reduced_precision_rel_l2,
    )


def _record_start(run_id: int, backend: str) -> None:
    with session_scope() as session:
        backend_run = session.scalars(
            select(BackendRun).filter_by(run_id=run_id, backend=backend)
        ).one()
        backend_run.status = "running"
        backend_run.attempts += 1
        backend_run.started_at = utcnow()


def _record_result(run_id: int, result: BackendResult) -> None:
    path = storage.store_outputs(run_id, result.backend, result.outputs) if result.outputs else None
    with session_scope() as session:
        backend_run = session.scalars(
            select(BackendRun).filter_by(run_id=run_id, backend=result.backend)
        ).one()
        backend_run.status = result.status
        backend_run.reason = result.reason
        backend_run.environment = jsonable(result.environment)
        backend_run.timings = result.timings
        backend_run.deterministic = result.deterministic
        backend_run.repeat_spread = result.repeat_spread
        backend_run.outputs_path = str(path) if path else None
        backend_run.finished_at = utcnow()


def divergence_rows(run: Run, model: Model, comparisons: list[Comparison]) -> list[LayerDivergence]:
    rows = []
    for comparison in comparisons:
        for row in comparison.layers:
            metrics = row.divergence.as_dict()
            histogram = {"edges": metrics.pop("hist_edges"), "counts": metrics.pop("hist_counts")}
            rows.append(
                LayerDivergence(
                    run_id=run.id,
                    model_id=model.id,
                    architecture=model.architecture,
                    backend=comparison.backend,
                    against=comparison.against,
                    mode=comparison.mode,
                    layer=row.layer,
                    class_name=row.class_name,
                    depth=row.depth,
                    histogram=histogram,
                    **metrics,
                )
            )
    return rows


def replace_divergences(run_id: int, against: str, comparisons: list[Comparison]) -> None:
    """Store one comparison set of a run, replacing any earlier one (idempotence)."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            return
        session.execute(
            delete(LayerDivergence).where(
                LayerDivergence.run_id == run_id, LayerDivergence.against == against
            )
        )
        session.add_all(divergence_rows(run, run.model, comparisons))


def stored_graph(model: Model) -> ModelGraph:
    return graph_from_summary(model.name, model.layers)


def stored_results(run: Run) -> dict[str, BackendResult]:
    """The finished backends of a run with their outputs read back from disk."""
    results = {}
    for backend_run in run.backend_runs:
        if backend_run.status == "done" and backend_run.outputs_path:
            results[backend_run.backend] = BackendResult(
                backend=backend_run.backend,
                status="done",
                outputs=storage.load_outputs(storage.outputs_path(run.id, backend_run.backend)),
            )
    return results


def execute_run(run_id: int) -> None:
    """Run every backend of a stored run and store outputs and divergences."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            log.warning("run %s vanished before it started", run_id)
            return
        run.status = "running"
        run.attempts += 1
        run.error = None
        model = run.model
        input_set = session.get(InputSet, run.input_set_id)
        assert input_set is not None
        plan: dict[str, Any] = {
            "path": storage.model_path(model.sha256, model.file_format),
            "inputs": input_set.sha256,
            "backends": [b.backend for b in run.backend_runs if b.backend != run.reference],
            "reference": run.reference,
            "modes": tuple(run.modes),
            "repeats": run.repeats,
        }
    try:
        artifact = load_artifact(plan["path"])
        inputs = storage.load_inputs(plan["inputs"])
        results = run_backends(
            artifact,
            inputs,
            backends=plan["backends"],
            reference=plan["reference"],
            modes=plan["modes"],
            repeats=plan["repeats"],
            on_start=lambda backend: _record_start(run_id, backend),
            on_result=lambda result: _record_result(run_id, result),
        )
        comparisons = compare(
            artifact.graph,
            results,
            against=plan["reference"],
            modes=plan["modes"],
            thresholds=thresholds(),
            histogram_bins=settings.histogram_bins,
        )
        replace_divergences(run_id, plan["reference"], comparisons)
    except Exception as error:
        log.exception("run %s failed", run_id)
        with session_scope() as session:
            run = session.get(Run, run_id)
            if run is not None:
                run.status, run.error = "failed", f"{type(error).__name__}: {error}"
                run.finished_at = utcnow()
        return
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is not None:
            run.status = "done"
            run.finished_at = utcnow()
