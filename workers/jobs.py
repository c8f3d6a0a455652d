"""The service's jobs: one stored run's backends and comparison, results into the database.

The only module of `workers` that touches the data layer (import-linter keeps it
so). A job takes a run id and re-reads everything else, so the embedded executor
and Celery workers call it the same way, and the order of a run's steps comes from
`RunOrder` (workers/engine/sequence.py) for both. The one exception: the embedded
executor sends its own jobs the run's plan it read as the run started (`Job.plan`),
which nothing changes during a run (a model with unfinished runs cannot be deleted,
an external backend's outputs join only a finished run); Celery's tasks carry ids
only. Jobs are idempotent: a re-delivered or restarted run overwrites its outputs
files and replaces its divergence rows, never duplicates.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from app.core.config import settings
from app.core.errors import ComparisonFailed, StorageFull
from app.data import divergences, runs, storage
from app.data.runs import RunPlan
from workers.backends.execution import run_backend
from workers.backends.pool import RunnerPool
from workers.backends.registry import backend_entry, backend_precision
from workers.diagnosis.runs import run_diagnoser
from workers.engine.compare import Diagnoser, compare
from workers.engine.explanations import LayerDiagnosis
from workers.engine.keras_env import import_keras
from workers.engine.loading import ModelArtifact, load_artifact
from workers.engine.options import EngineOptions
from workers.engine.results import BackendResult, LayerInputs, Mode, layer_inputs_from
from workers.engine.sequence import COMPARISON, RunOrder, Step, run_in_order
from workers.engine.status import BackendStatus
from workers.kernels import load_kernels
from workers.processes.child import JobWorker
from workers.processes.gate import hold_job
from workers.processes.supervisor import (
    JobFailed,
    JobLimits,
    JobProcessDied,
    JobProcesses,
    ShuttingDown,
)

log = logging.getLogger(__name__)


# A handed-on comparison of outputs up to this size may run in any lane's job process
# (`Step.portable`): one of a big model's (ResNet50's 105 MB a backend) stays in the CPU's,
# whose memory is sized for it, not in a browser's next to its Chromium.
PORTABLE_OUTPUTS_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Job:
    """What a job process is sent: one step of a run, or (`against` given) a comparison
    asked for after the run. With `hand_on`, a backend's job that has something to
    compare on arrival hands that comparison on as a step instead (its lane runs no
    comparisons: the executor queues it in the CPU's lane)."""

    run_id: int
    step: Step = COMPARISON
    against: str | None = None
    hand_on: bool = False
    # The run's plan as the executor read it when the run started (None: the job reads
    # it): what it holds never changes during a run, and reading it again took 0.4-0.8
    # ms each time, 12 times a dense10x50 run of seven backends, 4-5 of them on the
    # browser's lane.
    plan: RunPlan | None = None


@cache
def runner_pool() -> RunnerPool:
    """This job process's warm runners, kept from job to job until the process ends."""
    return RunnerPool(settings.engine_options())


def shut_down() -> None:
    """Deactivate the runners a job process activated (its browser, its keras-gpu child)."""
    if runner_pool.cache_info().currsize:
        runner_pool().close()


def warm_up(capability: str) -> None:
    """Pay the imports before a job process's first job, so it costs what later ones do:
    every job process compares (on arrival) and diagnoses what it compares.

    The CPU's job processes yield the cores to the browser's (DRIFTBENCH_CPU_JOB_NICE):
    a run's TF.js jobs run one after another in one page and are most of its time,
    while the CPU's own backends and the comparisons handed on to them can wait for a
    free core without delaying the run's end (on dense10x50, a run took 211-218 ms at
    nice 10 against 237-259 ms at 0, its TF.js jobs nearer their floors; on a 2-core
    Zen 5, 3.3-6.4 ms less again at 19 than at 10, in three runs of alternated
    servers)."""
    load_kernels()
    if capability == "cpu":
        os.nice(settings.cpu_job_nice)
        import_keras(settings.onednn)


def _plan_of(run_id: int, sent: RunPlan | None) -> RunPlan | None:
    """The plan the executor sent along with the job, else the run's as stored now
    (None once the run is gone)."""
    return sent if sent is not None else runs.load_plan(run_id)


@lru_cache(maxsize=4)
def _artifact(path: Path) -> ModelArtifact:
    """Job processes keep the last few parsed models: a queue often holds runs of one model."""
    return load_artifact(path, settings.engine_options())


def _reference_feed(
    run_id: int, reference: str, artifact: ModelArtifact, inputs: dict[str, np.ndarray]
) -> LayerInputs | None:
    path = storage.outputs_path(run_id, reference)
    if not path.exists():
        return None
    outputs = storage.load_outputs(path)["accumulated"]
    samples = min(array.shape[0] for array in outputs.values())  # fewer when capped
    fed = {name: array[:samples] for name, array in inputs.items()}
    return layer_inputs_from(artifact.graph, fed, outputs)


def _store_outputs(
    run_id: int, result: BackendResult
) -> tuple[dict[str, dict[str, np.ndarray]], Path | None, str | None]:
    """Write the outputs file: the outputs as stored (capped), its path and the cap's note.

    Outputs that do not fit on the disk fail the backend with that reason (the other
    backends and the run go on); a stale file of an earlier attempt goes too.
    """
    outputs, note = storage.capped_outputs(result.outputs, settings.max_stored_output_bytes)
    try:
        path = storage.store_outputs(run_id, result.backend, outputs) if outputs else None
    except StorageFull as error:
        storage.outputs_path(run_id, result.backend).unlink(missing_ok=True)
        result.status, result.reason = BackendStatus.FAILED, error.detail
        return {}, None, None
    return outputs, path, note


def run_backend_job(
    run_id: int,
    backend: str,
    *,
    hand_on: bool = False,
    lane_ends: bool = False,
    plan: RunPlan | None = None,
) -> BackendStatus | Step | None:
    """One backend of one run, compared on arrival; returns its final status (None if
    the run is gone). The backend is recorded finished once its comparison has ended, so
    the run's last step never starts while one is still being compared. With `hand_on`,
    a backend with something to compare is recorded stored, not finished, and the step
    that compares it is returned instead (`compare_handed_on`), unless `lane_ends` (its
    lane has nothing left to run) and the comparison is portable: then it is compared
    here, from the outputs in hand, without a hand-over and a read back. `plan`: the
    run's, as the executor read it (None: read here)."""
    plan = _plan_of(run_id, plan)
    if plan is None:
        return None
    claimed = runs.claim_backend(run_id, backend, max_attempts=settings.job_attempts)
    if claimed != BackendStatus.RUNNING:
        return claimed
    hold_job(settings.test_job_gate_dir, run_id, backend)
    started = time.perf_counter()
    artifact = _artifact(plan.model_path)
    inputs = storage.load_inputs(plan.inputs_sha256)
    is_reference = backend == plan.order.reference
    feed = (
        None
        if is_reference or "isolated" not in plan.modes
        else _reference_feed(run_id, plan.order.reference, artifact, inputs)
    )
    result = run_backend(
        runner_pool(),
        backend,
        artifact,
        inputs,
        modes=() if is_reference else plan.modes,
        repeats=plan.repeats,
        reference_feed=feed,
    )
    outputs, path, note = _store_outputs(run_id, result)
    # The job's own work, its outputs stored: what a floor is measured against (a
    # comparison handed on finishes the backend later).
    result.timings["job"] = time.perf_counter() - started
    earlier = None
    if result.status == BackendStatus.DONE and path is not None:
        earlier = runs.record_stored(
            run_id, backend, path, result.environment, result=result, note=note
        )
    if earlier and hand_on and arrival_pairs(plan, backend, earlier):
        portable = path is not None and path.stat().st_size <= PORTABLE_OUTPUTS_BYTES
        if not (portable and lane_ends):
            return Step(backend, earlier=tuple(earlier), portable=portable)
    if earlier:
        comparing = time.perf_counter()
        try:
            compare_on_arrival(plan, backend, inputs, earlier, replace(result, outputs=outputs))
        except Exception:  # the run's last step compares what is left uncompared
            log.warning("comparing %s of run %s on arrival failed", backend, run_id, exc_info=True)
        else:
            result.timings["compare"] = time.perf_counter() - comparing
    return runs.record_result(run_id, result, outputs_path=path, note=note)


def compare_handed_on(
    run_id: int, backend: str, earlier: Collection[str], *, plan: RunPlan | None = None
) -> BackendStatus | None:
    """The comparison on arrival a backend's job handed on, from the outputs it stored;
    then the backend is recorded finished (None if the run is gone)."""
    plan = _plan_of(run_id, plan)
    if plan is None:
        return None
    started = time.perf_counter()
    compare_s = None
    try:
        compare_on_arrival(plan, backend, storage.load_inputs(plan.inputs_sha256), earlier)
    except Exception:  # the run's last step compares what is left uncompared
        log.warning("comparing %s of run %s on arrival failed", backend, run_id, exc_info=True)
    else:
        compare_s = time.perf_counter() - started
    return runs.record_compared(run_id, backend, compare_s)


def _reusing(fresh: Diagnoser, run_id: int, reference: str, replaced: Collection[str]) -> Diagnoser:
    """`fresh`, except for a backend and mode whose every row against the reference is
    diagnosed: the diagnoses those rows hold. Rows this comparison replaces (of the
    backends in `replaced`) are not read back."""
    kept: dict[str, dict[str, dict[str, LayerDiagnosis]]] = {}

    def diagnose(backend: str, mode: Mode) -> Mapping[str, LayerDiagnosis]:
        if backend in replaced:
            return fresh(backend, mode)
        if backend not in kept:
            kept[backend] = divergences.stored_diagnoses(run_id, backend, reference)
        reused = kept[backend].get(mode)
        return fresh(backend, mode) if reused is None else reused

    return diagnose


def _backends_read(plan: RunPlan, pairs: Mapping[str, Collection[str] | None]) -> set[str] | None:
    """The stored backends comparing `pairs` reads: the reference (whose outputs feed the
    diagnosis), the targets and their candidates; None: every backend of the run."""
    named = {plan.order.reference}
    for target, candidates in pairs.items():
        if candidates is None:
            return None
        named |= {target, *candidates}
    return named


def _compare_pairs(
    plan: RunPlan,
    pairs: Mapping[str, Collection[str] | None],
    options: EngineOptions,
    inputs: dict[str, np.ndarray],
    arrived: BackendResult | None = None,
) -> bool:
    """Compare each target with its candidates (None: every stored backend, all of the
    target's rows replaced) and store the rows; `arrived`, a backend not yet recorded
    finished, is compared from the outputs it holds. A candidate's diagnosis does not
    depend on the target: one with rows against the reference reuses theirs; the others
    are diagnosed once, for every target. False when the run is gone."""
    wanted = _backends_read(plan, pairs)
    if wanted is not None and arrived is not None:
        wanted.discard(arrived.backend)
    stored = divergences.stored_run(plan.run_id, wanted)
    if stored is None:
        return False
    if arrived is not None:
        stored = replace(stored, results={**stored.results, arrived.backend: arrived})
    fresh = run_diagnoser(
        _artifact(plan.model_path).graph,
        inputs,
        stored.results,
        fed_from=stored.reference,
        options=options,
    )
    # Rows against the reference that this call replaces are not read back.
    replaced = pairs.get(stored.reference, ())
    diagnose = (
        _reusing(fresh, plan.run_id, stored.reference, replaced)
        if fresh is not None and replaced is not None
        else fresh
    )
    comparisons = [
        comparison
        for target, candidates in pairs.items()
        for comparison in compare(
            stored.graph,
            stored.results,
            against=target,
            modes=stored.modes,
            options=options,
            diagnose=diagnose,
            backends=candidates,
        )
    ]
    divergences.replace_divergences(run_id=plan.run_id, replaced=pairs, comparisons=comparisons)
    return True


def arrival_pairs(plan: RunPlan, backend: str, earlier: Collection[str]) -> dict[str, list[str]]:
    """The pairs a backend compares as it arrives, by target: itself against the reference
    and each `compare_against` target stored `earlier`, and, a target itself, every
    backend stored `earlier` against it (those already compared with the reference reuse
    their diagnoses from those rows). The reference's outputs feed every diagnosis, so
    nothing is compared before it is stored: a reference stored after others (it feeds
    none of them without the isolated mode) compares every pair among them too. Over a
    run, each pair it must compare comes once, with the reference stored."""
    reference = plan.order.reference
    if backend != reference and reference not in earlier:
        return {}
    targets = dict.fromkeys([reference, *plan.compare_against])
    pairs = {target: [backend] for target in targets if target != backend and target in earlier}
    if backend in targets:
        candidates = [b for b in plan.order.backends if b in earlier]
        if candidates:
            pairs[backend] = candidates
    if backend == reference:
        for target in pairs.keys() - {reference}:
            pairs[target] += [b for b in plan.order.backends if b in earlier and b != target]
    return pairs


def compare_on_arrival(
    plan: RunPlan,
    backend: str,
    inputs: dict[str, np.ndarray],
    earlier: Collection[str],
    arrived: BackendResult | None = None,
) -> None:
    """A backend against the run's reference and each `compare_against` target among the
    backends stored `earlier` (a target itself: against every one of them), in the job
    process that ran it and from the outputs it holds: comparisons overlap the backends
    still running (on another core, in the browser's job process) instead of queueing
    behind the last of them, and each pair is compared by whichever of its two backends
    and the reference was stored last (`runs.record_stored`, `arrival_pairs`). Each
    backend is diagnosed with an equal share of the run's budget, by whichever job
    compares it with the reference. `arrived`: the backend's outputs as its job holds
    them (None: read back from where they were stored)."""
    pairs = arrival_pairs(plan, backend, earlier)
    if not pairs:
        return
    options = settings.engine_options()
    reference = plan.order.reference
    # The reference stored after others diagnoses each of them; any other, itself.
    diagnosed = len(pairs.get(reference, [])) if backend == reference else 1
    share = options.diagnosis_budget_s * diagnosed / len(plan.order.others)
    _compare_pairs(plan, pairs, replace(options, diagnosis_budget_s=share), inputs, arrived)


def _pairs_left(plan: RunPlan) -> dict[str, Collection[str] | None]:
    """The pairs of the run's targets (its reference, its `compare_against`) and finished
    backends that have no rows yet: what the run's last step compares."""
    statuses = runs.backend_statuses(plan.run_id)
    done = [b for b in plan.order.backends if statuses.get(b) == BackendStatus.DONE]
    compared = divergences.compared_pairs(plan.run_id)
    pairs: dict[str, Collection[str] | None] = {}
    for target in dict.fromkeys([plan.order.reference, *plan.compare_against]):
        if target in done:
            left = [b for b in done if b != target and (target, b) not in compared]
            if left:
                pairs[target] = left
    return pairs


def compare_run(run_id: int, against: str | None = None, *, plan: RunPlan | None = None) -> bool:
    """Compare the run's finished backends, from their stored outputs, with `against`
    (all of them anew), or (None: the run's own last step) the pairs left uncompared
    (`_pairs_left`); False when the run is gone. `plan`: the run's, as the executor
    read it (None: read here)."""
    plan = _plan_of(run_id, plan)
    if plan is None:
        return False
    pairs = {against: None} if against is not None else _pairs_left(plan)
    if not pairs:
        return True
    inputs = storage.load_inputs(plan.inputs_sha256)
    return _compare_pairs(plan, pairs, settings.engine_options(), inputs)


def nothing_left_to_compare(run_id: int, *, plan: RunPlan | None = None) -> bool:
    """True when the run's last step has no pair to compare (each was compared on
    arrival): its executor then ends the run itself instead of sending a job. `plan`:
    the run's, as the executor read it (None: read here)."""
    plan = _plan_of(run_id, plan)
    return plan is not None and not _pairs_left(plan)


def perform(job: Job) -> BackendStatus | Step | None:
    """Runs in a job process: the step's final status (None if its run is gone), or the
    step a backend's job hands on."""
    if job.step.backend is not None and job.step.earlier is not None:
        return compare_handed_on(job.run_id, job.step.backend, job.step.earlier, plan=job.plan)
    if job.step.backend is not None:
        return run_backend_job(
            job.run_id,
            job.step.backend,
            hand_on=job.hand_on,
            lane_ends=job.step.lane_ends,
            plan=job.plan,
        )
    if compare_run(job.run_id, job.against, plan=job.plan) and job.against is None:
        runs.finish_run(job.run_id)
    return BackendStatus.DONE


def job_processes() -> JobProcesses:
    """Warm job processes under the configured limits, running this module's jobs."""
    return JobProcesses(
        JobLimits(settings.job_memory_limit_bytes, settings.backend_time_limit_s),
        JobWorker(perform, warm_up, shut_down),
    )


def first_steps(run_id: int) -> list[Step]:
    """Start the run (one more attempt): its first steps, none if the run is gone."""
    plan = runs.start_run(run_id)
    return [] if plan is None else plan.order.first()


def steps_after(run_id: int, finished: Step) -> list[Step]:
    """What may start now that `finished` has, for executors running steps at once: the
    comparison only for the one caller that claims it."""
    plan = runs.load_plan(run_id)
    if plan is None:
        return []
    steps = plan.order.after(finished, runs.backend_statuses(run_id))
    return [s for s in steps if not s.is_comparison or runs.claim_comparison(run_id)]


def capability_of(step: Step) -> str:
    """The kind of job process a step runs in: its backend's queue; a comparison is CPU
    work, unless a lane that handed one on runs it itself (no CPU lane in its wave)."""
    if step.backend is None:
        return "cpu"
    if step.compares_arrival:
        return step.lane or "cpu"
    return backend_entry(step.backend).queue


def supervised_step(
    processes: JobProcesses,
    run_id: int,
    step: Step,
    *,
    hand_on: bool = False,
    plan: RunPlan | None = None,
) -> Step | None:
    """One step in a job process of its capability; the step it hands on (`Job.hand_on`).
    A failure becomes the backend's reason (a process that would not start too) or the
    run's, so the run goes on; only a shutdown passes through. `plan`: the run's, as
    the executor read it when the run started, sent along (None: the job reads it)."""
    if step.backend is None:
        label = f"comparison of run {run_id}"
    elif step.compares_arrival:
        label = f"comparing {step.backend} on arrival"
    else:
        label = step.backend
    if step.is_comparison and nothing_left_to_compare(run_id, plan=plan):
        runs.finish_run(run_id)
        return None
    job = Job(run_id, step, hand_on=hand_on, plan=plan)
    try:
        answer = processes.run(capability_of(step), job, label)
    except (JobFailed, JobProcessDied) as error:
        if step.backend is None:
            runs.fail_run(run_id, str(error))
        else:
            runs.record_failure(run_id, step.backend, str(error))
        return None
    return answer.result if isinstance(answer.result, Step) else None


def compare_on_request(processes: JobProcesses, run_id: int, against: str) -> None:
    """A comparison asked for after the run (POST /api/runs/{id}/comparisons), in a
    supervised job process like every other job; the caller checked it can be made."""
    try:
        processes.run("cpu", Job(run_id, COMPARISON, against), f"comparison of run {run_id}")
    except (JobFailed, JobProcessDied) as error:
        raise ComparisonFailed(f"comparing run {run_id} against {against}: {error}") from error


def _reduced_precision_first(order: RunOrder) -> RunOrder:
    """The backends of reduced nominal precision (float16, int8, TF32) first in their
    lane: their layers drift past float32 rounding, so their diagnosis tests its
    hypotheses and their comparison takes longest (tfjs-webgl-f16's 18 ms against 14 for
    tfjs-webgl on dense10x50); started first, it overlaps the lane's other jobs instead of
    ending the run."""
    exact = ("float32", "float64")
    others = sorted(order.others, key=lambda backend: backend_precision(backend) in exact)
    return dataclasses.replace(order, others=tuple(others))


def execute_run(run_id: int, processes: JobProcesses) -> None:
    """The embedded executor's job: every step of the run in order, each in a supervised
    job process, so a crash fails one backend and the run goes on; the browser's
    backends run while the CPU's do. A run cut short by a server stop stays as it is,
    for the next start to run again."""
    try:
        plan = runs.start_run(run_id)
        if plan is None:
            return

        def run_step(step: Step) -> Step | None:
            if step.is_comparison and not runs.claim_comparison(run_id):
                return None
            # A lane that runs no comparisons hands its backends' on to the CPU's.
            hand_on = capability_of(step) != "cpu"
            return supervised_step(processes, run_id, step, hand_on=hand_on, plan=plan)

        run_in_order(
            _reduced_precision_first(plan.order),
            run_step,
            lambda: runs.backend_statuses(run_id),
            lane=capability_of,
        )
    except ShuttingDown as stopping:
        log.info("run %s left for the next start: %s", run_id, stopping)
    except Exception as error:
        try:
            runs.fail_run(run_id, f"{type(error).__name__}: {error}")
        except Exception:  # the database itself failed (a full disk): say so in the log
            log.exception("run %s failed and could not be marked failed", run_id)
