"""The service's job: one stored run, every backend, results into the database.

It takes a run id and re-reads everything else, so the embedded pool and Celery
workers call it the same way. It is idempotent: a re-delivered or restarted run
overwrites its outputs files and replaces its divergence rows, never duplicates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select

from app import drift_cache, storage
from app.config import settings
from app.db import session_scope
from app.errors import StorageFull
from app.models import BackendRun, InputSet, LayerDivergence, Model, Run, utcnow
from app.report import jsonable
from workers.drift_job import (
    BackendResult,
    Comparison,
    Mode,
    compare,
    layer_inputs_from,
    run_backend,
)
from workers.job_gate import hold_job
from workers.job_process import (
    JobFailed,
    JobLimits,
    JobProcessDied,
    JobProcesses,
    ShuttingDown,
)
from workers.model_graph import ModelGraph, graph_from_summary
from workers.model_loading import ModelArtifact, load_artifact
from workers.runners import runner_class
from workers.runners.base import LayerInputs

FINAL_STATUSES = ("done", "failed", "unsupported", "skipped")

log = logging.getLogger(__name__)


def _record_start(run_id: int, backend: str) -> None:
    with session_scope() as session:
        backend_run = session.scalars(
            select(BackendRun).filter_by(run_id=run_id, backend=backend)
        ).one()
        backend_run.status = "running"
        backend_run.attempts += 1
        backend_run.started_at = utcnow()


def _record_result(run_id: int, result: BackendResult) -> str:
    """Store the outputs and the result; returns the status recorded.

    Outputs that do not fit on the disk fail the backend with that reason (the other
    backends and the run go on); a stale file of an earlier attempt goes too.
    """
    outputs, note = storage.capped_outputs(result.outputs, settings.max_stored_output_bytes)
    status, reason = result.status, result.reason
    try:
        path = storage.store_outputs(run_id, result.backend, outputs) if outputs else None
    except StorageFull as error:
        storage.outputs_path(run_id, result.backend).unlink(missing_ok=True)
        path, note, status, reason = None, None, "failed", error.detail
    with session_scope() as session:
        backend_run = session.scalars(
            select(BackendRun).filter_by(run_id=run_id, backend=result.backend)
        ).one()
        backend_run.status = status
        backend_run.reason = "; ".join(filter(None, (reason, note))) or None
        backend_run.environment = jsonable(result.environment)
        backend_run.timings = result.timings
        backend_run.deterministic = result.deterministic
        backend_run.repeat_spread = result.repeat_spread
        backend_run.outputs_path = str(path) if path else None
        backend_run.outputs_expired_at = None  # a re-run stores them anew
        backend_run.finished_at = utcnow()
    return status


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
        drift_cache.bump(session, run.model_id, run.model.architecture)


def stored_graph(model: Model) -> ModelGraph:
    return graph_from_summary(model.name, model.layers)


def stored_results(run: Run) -> dict[str, BackendResult]:
    """The finished backends of a run with their outputs read back from disk.

    The reference's isolated outputs are its accumulated ones (each layer already
    received the reference's own inputs), so they are stored once and aliased here.
    Backends whose outputs were capped hold fewer samples; all are compared over the
    first samples every backend stored.
    """
    shapes = {
        backend_run.backend: storage.stored_shapes(
            storage.outputs_path(run.id, backend_run.backend)
        )
        for backend_run in run.backend_runs
        if backend_run.status == "done" and backend_run.outputs_path
    }
    samples = min(
        (shape[0] for s in shapes.values() for m in s.values() for shape in m.values()), default=0
    )
    results = {}
    for backend, stored in shapes.items():
        path = storage.outputs_path(run.id, backend)
        outputs = {
            mode: storage.StoredLayers(path, mode, list(layers), samples)
            for mode, layers in stored.items()
        }
        if backend == run.reference:
            outputs["isolated"] = outputs["accumulated"]
        results[backend] = BackendResult(backend=backend, status="done", outputs=outputs)
    return results


@dataclass(frozen=True)
class RunPlan:
    """What a backend job needs to know about its run, read once from the database."""

    run_id: int
    model_path: Path
    inputs_sha256: str
    reference: str
    backends: tuple[str, ...]
    modes: tuple[Mode, ...]
    repeats: int


def load_plan(run_id: int) -> RunPlan | None:
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        input_set = session.get(InputSet, run.input_set_id)
        assert input_set is not None
        return RunPlan(
            run_id=run.id,
            model_path=storage.model_path(run.model.sha256, run.model.file_format),
            inputs_sha256=input_set.sha256,
            reference=run.reference,
            backends=tuple(b.backend for b in run.backend_runs if b.backend != run.reference),
            modes=tuple(run.modes),
            repeats=run.repeats,
        )


def start_run(run_id: int) -> RunPlan | None:
    """Mark the run running (one more attempt); None when it no longer exists."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            log.warning("run %s vanished before it started", run_id)
            return None
        run.status = "running"
        run.attempts += 1
        run.error = None
    return load_plan(run_id)


@lru_cache(maxsize=4)
def _artifact(path: Path) -> ModelArtifact:
    """Workers keep the last few parsed models: a queue often holds runs of one model."""
    return load_artifact(path)


def _reference_feed(
    plan: RunPlan, artifact: ModelArtifact, inputs: dict[str, np.ndarray]
) -> LayerInputs | None:
    path = storage.outputs_path(plan.run_id, plan.reference)
    if not path.exists():
        return None
    outputs = storage.load_outputs(path)["accumulated"]
    samples = min(array.shape[0] for array in outputs.values())  # fewer when capped
    fed = {name: array[:samples] for name, array in inputs.items()}
    return layer_inputs_from(artifact.graph, fed, outputs)


def execute_backend(run_id: int, backend: str) -> str | None:
    """One backend of one run; returns its final status (None if the run is gone).

    A job delivered again after its worker died finds its attempts counted: past
    DRIFTBENCH_JOB_ATTEMPTS it fails with the reason instead of running again, and
    a job whose backend already finished returns at once.
    """
    plan = load_plan(run_id)
    if plan is None:
        return None
    with session_scope() as session:
        backend_run = session.scalars(
            select(BackendRun).filter_by(run_id=run_id, backend=backend)
        ).one()
        if backend_run.status in FINAL_STATUSES:
            return backend_run.status
        if backend_run.attempts >= settings.job_attempts:
            backend_run.status = "failed"
            backend_run.reason = (
                f"gave up after {backend_run.attempts} attempts: the worker "
                "running it stopped each time (DRIFTBENCH_JOB_ATTEMPTS)"
            )
            backend_run.finished_at = utcnow()
            return backend_run.status
    _record_start(run_id, backend)
    hold_job(settings.test_job_gate_dir, run_id, backend)
    artifact = _artifact(plan.model_path)
    inputs = storage.load_inputs(plan.inputs_sha256)
    is_reference = backend == plan.reference
    feed = (
        None
        if is_reference or "isolated" not in plan.modes
        else (_reference_feed(plan, artifact, inputs))
    )
    result = run_backend(
        backend,
        artifact,
        inputs,
        modes=() if is_reference else plan.modes,
        repeats=plan.repeats,
        reference_feed=feed,
    )
    return _record_result(run_id, result)


def finalize_run(run_id: int) -> None:
    """Compare every finished backend with the reference and mark the run done."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            return
        comparisons = compare(
            stored_graph(run.model),
            stored_results(run),
            against=run.reference,
            modes=run.modes,
            thresholds=settings.verdict_thresholds(),
            histogram_bins=settings.histogram_bins,
        )
    replace_divergences(run_id, run.reference, comparisons)
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is not None:
            run.status = "done"
            run.finished_at = utcnow()


def fail_run(run_id: int, reason: str) -> None:
    log.error("run %s failed: %s", run_id, reason)
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is not None:
            run.status, run.error = "failed", reason
            run.finished_at = utcnow()


def record_failure(run_id: int, backend: str, reason: str) -> str | None:
    """A backend job that ended outside its runner (its process died, the job raised);
    returns the backend's status as recorded (None if its run is gone).

    A backend that had already finished keeps its result (the process died after it
    was stored); otherwise any outputs file it left without a database record goes.
    """
    with session_scope() as session:
        backend_run = session.scalars(
            select(BackendRun).filter_by(run_id=run_id, backend=backend)
        ).one_or_none()
        if backend_run is None or backend_run.status in FINAL_STATUSES:
            return None if backend_run is None else backend_run.status
        storage.outputs_path(run_id, backend).unlink(missing_ok=True)
        backend_run.status, backend_run.reason = "failed", reason
        backend_run.outputs_path = None
        backend_run.finished_at = utcnow()
        return backend_run.status


@dataclass(frozen=True)
class Job:
    """What a job process is sent: one backend of a run, or (no backend) the comparison."""

    run_id: int
    backend: str | None = None


def perform(job: Job) -> str | None:
    """Runs in a job process: the job's final status (None if its run is gone)."""
    if job.backend is None:
        finalize_run(job.run_id)
        return "done"
    return execute_backend(job.run_id, job.backend)


def job_limits() -> JobLimits:
    return JobLimits(settings.job_memory_limit_bytes, settings.backend_time_limit_s)


def supervised_backend(processes: JobProcesses, run_id: int, backend: str) -> str | None:
    """One backend job in a job process of its capability; a failure becomes its reason
    (a process that would not start too), so the run goes on."""
    try:
        return processes.run(runner_class(backend).QUEUE, Job(run_id, backend), backend).result
    except (JobFailed, JobProcessDied) as error:
        return record_failure(run_id, backend, str(error))


def supervised_finalize(processes: JobProcesses, run_id: int) -> None:
    try:
        processes.run("cpu", Job(run_id), f"comparison of run {run_id}")
    except (JobFailed, JobProcessDied) as error:
        fail_run(run_id, str(error))


def execute_run(run_id: int, processes: JobProcesses) -> None:
    """The embedded executor's job: reference, the other backends, then the comparison,
    each in a supervised job process, so a crash fails one backend and the run goes on.
    A run cut short by a server stop stays as it is, for the next start to run again."""
    try:
        plan = start_run(run_id)
        if plan is None:
            return
        for backend in (plan.reference, *plan.backends):
            supervised_backend(processes, run_id, backend)
        supervised_finalize(processes, run_id)
    except ShuttingDown as stopping:
        log.info("run %s left for the next start: %s", run_id, stopping)
    except Exception as error:
        try:
            fail_run(run_id, f"{type(error).__name__}: {error}")
        except Exception:  # the database itself failed (a full disk): say so in the log
            log.exception("run %s failed and could not be marked failed", run_id)
