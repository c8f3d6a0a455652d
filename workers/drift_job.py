"""The job function: run one model on several backends, then compare every layer.

Running and comparing are separate steps joined by `BackendResult`s, so stored
outputs can be compared again later against any backend. The reference runs
first because the isolated mode feeds every other backend the reference's input
to each layer; a backend that fails never stops the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from workers.metrics import (
    DEFAULT_THRESHOLDS,
    VERDICTS,
    Divergence,
    VerdictThresholds,
    divergence,
)
from workers.model_graph import ModelGraph
from workers.model_loading import ModelArtifact
from workers.runners import runner_class
from workers.runners.base import (
    BackendUnavailable,
    BackendUnsupported,
    LayerInputs,
    LayerOutputs,
    Runner,
)

Mode = Literal["accumulated", "isolated"]
MODES: tuple[Mode, ...] = ("accumulated", "isolated")
DRIFT_VERDICTS = VERDICTS[2:]


@dataclass
class BackendResult:
    backend: str
    status: str = "queued"
    reason: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Mapping[str, np.ndarray]] = field(default_factory=dict)
    deterministic: bool | None = None
    repeat_spread: float | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "status": self.status,
            "reason": self.reason,
            "environment": self.environment,
            "timings": self.timings,
            "deterministic": self.deterministic,
            "repeat_spread": self.repeat_spread,
        }


@dataclass(frozen=True)
class LayerDivergence:
    layer: str
    class_name: str
    depth: int
    divergence: Divergence


@dataclass(frozen=True)
class Comparison:
    """One backend against one other, in one mode, layer by layer."""

    backend: str
    against: str
    mode: Mode
    layers: list[LayerDivergence]

    def first_layer_with(self, verdict: str) -> str | None:
        return next((row.layer for row in self.layers if row.divergence.verdict == verdict), None)

    @property
    def drift_start(self) -> LayerDivergence | None:
        """The first layer whose verdict is worse than rounding: where drift starts."""
        return next((row for row in self.layers if row.divergence.verdict in DRIFT_VERDICTS), None)

    def summary(self) -> dict[str, Any]:
        start = self.drift_start
        return {
            "backend": self.backend,
            "against": self.against,
            "mode": self.mode,
            "drift_start": None
            if start is None
            else {
                "layer": start.layer,
                "verdict": start.divergence.verdict,
            },
            "first_layer_by_verdict": {v: self.first_layer_with(v) for v in DRIFT_VERDICTS},
            "layers": [
                {
                    "layer": row.layer,
                    "class_name": row.class_name,
                    "depth": row.depth,
                    **row.divergence.as_dict(),
                }
                for row in self.layers
            ],
        }


def layer_inputs_from(
    graph: ModelGraph, inputs: dict[str, np.ndarray], outputs: LayerOutputs
) -> LayerInputs:
    """What each layer received in a run: the isolated mode's feed."""
    values = {**inputs, **outputs}
    return {layer.name: [values[name] for name in layer.inbound] for layer in graph.compute_layers}


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
    backend: str,
    model: ModelArtifact,
    inputs: dict[str, np.ndarray],
    *,
    modes: Iterable[Mode],
    repeats: int,
    reference_feed: LayerInputs | None,
) -> BackendResult:
    """One backend on one model; every failure becomes a status with its reason."""
    result = BackendResult(backend=backend, status="running")
    try:
        started = time.perf_counter()
        runner = runner_class(backend)()
        with runner:
            result.timings["activate"] = time.perf_counter() - started
            _run_repeats(runner, model, inputs, repeats, result)
            if "isolated" in modes and reference_feed is None:
                result.reason = "isolated mode skipped: the reference did not run"
            elif "isolated" in modes:
                started = time.perf_counter()
                result.outputs["isolated"] = runner.run_isolated(model, reference_feed)
                result.timings["isolated"] = time.perf_counter() - started
            result.environment = runner.environment()
        result.status = "done"
    except BackendUnsupported as error:
        result.status, result.reason = "unsupported", str(error)
    except BackendUnavailable as error:
        result.status, result.reason = "skipped", str(error)
    except Exception as error:  # a backend's own crash must not stop the other backends
        result.status, result.reason = "failed", failure_reason(error)
    return result


def failure_reason(error: Exception) -> str:
    """The error in one line a person can act on; allocation failures say so first.

    TensorFlow's out-of-memory error carries a whole graph traceback; the line that
    matters is the one naming the tensor it could not allocate.
    """
    text = str(error)
    if isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = next(
            (line for line in lines if "OOM when allocating" in line or "allocate" in line),
            lines[0] if lines else type(error).__name__,
        )
        return f"out of memory: {detail.split(' on /job:')[0]}"
    return f"{type(error).__name__}: {text}"


def _report_nothing(_: str | BackendResult) -> None:
    """Default progress hook: the CLI only needs the final results."""


def run_backends(
    model: ModelArtifact,
    inputs: dict[str, np.ndarray],
    *,
    backends: list[str],
    reference: str,
    modes: Iterable[Mode] = ("accumulated",),
    repeats: int = 1,
    on_start: Callable[[str], None] = _report_nothing,
    on_result: Callable[[BackendResult], None] = _report_nothing,
) -> dict[str, BackendResult]:
    """Run the reference, then every other backend; returns results keyed by backend.

    `on_start` and `on_result` are called around each backend, so a service can
    record progress and store each backend's outputs as soon as they exist.
    """
    modes = tuple(modes)
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for backend in [reference, *backends]:
        runner_class(backend)
    on_start(reference)
    reference_result = run_backend(
        reference, model, inputs, modes=(), repeats=repeats, reference_feed=None
    )
    feed = None
    if reference_result.status == "done":
        reference_result.outputs["isolated"] = reference_result.outputs["accumulated"]
        feed = layer_inputs_from(model.graph, inputs, reference_result.outputs["accumulated"])
    on_result(reference_result)
    results = {reference: reference_result}
    for backend in backends:
        if backend not in results:
            on_start(backend)
            results[backend] = run_backend(
                backend, model, inputs, modes=modes, repeats=repeats, reference_feed=feed
            )
            on_result(results[backend])
    return results


def compare(
    graph: ModelGraph,
    results: dict[str, BackendResult],
    *,
    against: str,
    modes: Iterable[Mode] = ("accumulated",),
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    histogram_bins: int = 41,
) -> list[Comparison]:
    """Every finished backend against `against`, in each mode both sides have."""
    target = results.get(against)
    if target is None or target.status != "done":
        return []
    comparisons = []
    for backend, result in results.items():
        if backend == against or result.status != "done":
            continue
        for mode in modes:
            if mode not in result.outputs or mode not in target.outputs:
                continue
            rows = [
                LayerDivergence(
                    layer=layer.name,
                    class_name=layer.class_name,
                    depth=depth,
                    divergence=divergence(
                        result.outputs[mode][layer.name],
                        target.outputs[mode][layer.name],
                        thresholds=thresholds,
                        histogram_bins=histogram_bins,
                    ),
                )
                for depth, layer in enumerate(graph.compute_layers, start=1)
            ]
            comparisons.append(Comparison(backend=backend, against=against, mode=mode, layers=rows))
    return comparisons
