"""Running one backend on one model: every layer's outputs, or a status with its reason.

A backend that fails never stops the others: every failure becomes the result's
status and reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from workers.backends.base import BackendUnavailable, BackendUnsupported, Runner
from workers.backends.pool import RunnerPool
from workers.backends.registry import backend_entry
from workers.engine.errors import InvalidRequest, failure_reason
from workers.engine.loading import ModelArtifact
from workers.engine.results import (
    BackendResult,
    LayerInputs,
    LayerOutputs,
    Mode,
    layer_inputs_from,
)
from workers.engine.sequence import RunOrder, Step, run_in_order
from workers.engine.status import BackendStatus


def _run_repeats(
    runner: Runner,
    model: ModelArtifact,
    inputs: dict[str, np.ndarray],
    repeats: int,
    result: BackendResult,
) -> None:
    runs: list[LayerOutputs] = []
    seconds: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        runs.append(runner.run(model, inputs))
        seconds.append(time.perf_counter() - started)
    result.outputs["accumulated"] = runs[0]
    result.timings["accumulated"] = min(seconds)
    if repeats > 1:
        spread = max(
            float(np.max(np.abs(run[name].astype(np.float64) - runs[0][name]), initial=0.0))
            for run in runs[1:]
            for name in run
        )
        identical = all(
            np.array_equal(run[name], runs[0][name], equal_nan=True)
            for run in runs[1:]
            for name in run
        )
        result.deterministic = identical
        result.repeat_spread = spread


def run_backend(
    pool: RunnerPool,
    backend: str,
    model: ModelArtifact,
    inputs: dict[str, np.ndarray],
    *,
    modes: Iterable[Mode],
    repeats: int,
    reference_feed: LayerInputs | None,
) -> BackendResult:
    """One backend on one model with the pool's warm runner; every failure becomes a
    status with its reason. `timings['activate']` is what getting the runner cost: its
    activation on the backend's first job in this process, next to nothing after."""
    result = BackendResult(backend=backend, status=BackendStatus.RUNNING)
    try:
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        started = time.perf_counter()
        runner = pool.runner(backend)
        result.timings["activate"] = time.perf_counter() - started
        _run_repeats(runner, model, inputs, repeats, result)
        if "isolated" in modes and reference_feed is None:
            result.reason = "isolated mode skipped: the reference did not run"
        elif "isolated" in modes:
            started = time.perf_counter()
            result.outputs["isolated"] = runner.run_isolated(model, reference_feed)
            result.timings["isolated"] = time.perf_counter() - started
        result.environment = runner.environment()
        result.status = BackendStatus.DONE
    except BackendUnsupported as error:
        result.status, result.reason = BackendStatus.UNSUPPORTED, str(error)
    except BackendUnavailable as error:
        result.status, result.reason = BackendStatus.SKIPPED, str(error)
    except Exception as error:  # a backend's own crash must not stop the other backends
        result.status, result.reason = BackendStatus.FAILED, failure_reason(error)
    return result


def run_locally(
    pool: RunnerPool,
    model: ModelArtifact,
    inputs: dict[str, np.ndarray],
    *,
    backends: Iterable[str],
    reference: str,
    modes: Iterable[Mode] = ("accumulated",),
    repeats: int = 1,
    on_status: Callable[[str, str, str | None], None] | None = None,
) -> dict[str, BackendResult]:
    """Every backend of a run in this process (the CLI, tests), in the run's order; results
    keyed by backend, the reference first. No comparison: `compare` the results.
    `on_status(backend, status, reason)` hears each backend queued, running and finished
    (the CLI's progress display)."""
    modes = tuple(modes)
    if repeats < 1:
        raise InvalidRequest(f"repeats must be at least 1, got {repeats}")
    order = RunOrder.of(reference, backends, feeds="isolated" in modes)
    for backend in order.backends:
        backend_entry(backend)
    results: dict[str, BackendResult] = {}
    feed: list[LayerInputs] = []

    def tell(backend: str, status: str, reason: str | None = None) -> None:
        if on_status is not None:
            on_status(backend, status, reason)

    for backend in order.backends:
        tell(backend, BackendStatus.QUEUED)

    def run_step(step: Step) -> None:
        if step.backend is None:
            return
        is_reference = step.backend == order.reference
        tell(step.backend, BackendStatus.RUNNING)
        result = run_backend(
            pool,
            step.backend,
            model,
            inputs,
            modes=() if is_reference else modes,
            repeats=repeats,
            reference_feed=feed[0] if feed else None,
        )
        if is_reference and result.status == BackendStatus.DONE:
            result.outputs["isolated"] = result.outputs["accumulated"]
            feed.append(layer_inputs_from(model.graph, inputs, result.outputs["accumulated"]))
        results[step.backend] = result
        tell(step.backend, result.status, result.reason)

    def statuses() -> dict[str, str]:
        return {
            b: results[b].status if b in results else BackendStatus.QUEUED for b in order.backends
        }

    run_in_order(order, run_step, statuses)
    return results
