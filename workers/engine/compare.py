"""Comparing finished backends layer by layer: one `Comparison` per backend, mode and
`against`, each layer's `Divergence` from workers/engine/metrics.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.engine.explanations import NOT_DIAGNOSED, LayerDiagnosis
from workers.engine.graph import LayerSpec, ModelGraph
from workers.engine.metrics import DRIFT_VERDICTS, Divergence, divergences
from workers.engine.options import DEFAULT_OPTIONS, EngineOptions
from workers.engine.results import BackendResult, Mode
from workers.engine.status import BackendStatus

# Each layer's diagnosis of one backend in one mode (workers/diagnosis computes it).
Diagnoser = Callable[[str, Mode], Mapping[str, LayerDiagnosis]]


@dataclass(frozen=True)
class LayerDrift:
    """One layer of a comparison: where it is in the model, its divergence, and (when
    diagnosed) its local error and the causes tested on it."""

    layer: str
    class_name: str
    depth: int
    divergence: Divergence
    local: LayerDiagnosis | None = None

    @property
    def explained_by(self) -> str | None:
        return None if self.local is None else self.local.explained_by

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "class_name": self.class_name,
            "depth": self.depth,
            **self.divergence.as_dict(),
            **(NOT_DIAGNOSED if self.local is None else self.local.as_dict()),
        }


@dataclass(frozen=True)
class Comparison:
    """One backend against one other, in one mode, layer by layer."""

    backend: str
    against: str
    mode: Mode
    layers: list[LayerDrift]
    # Layers one side has no output for (TF.js's masks, what a port left out), in order.
    not_provided: tuple[str, ...] = ()

    def first_layer_with(self, verdict: str) -> str | None:
        return next((row.layer for row in self.layers if row.divergence.verdict == verdict), None)

    @property
    def drift_start(self) -> LayerDrift | None:
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
                "explained_by": start.explained_by,
            },
            "first_layer_by_verdict": {v: self.first_layer_with(v) for v in DRIFT_VERDICTS},
            "layers": [row.as_dict() for row in self.layers],
            "not_provided": list(self.not_provided),
        }


def _row(
    layer: LayerSpec, depth: int, measured: Divergence, local: LayerDiagnosis | None
) -> LayerDrift:
    """A layer's row; a backend of reduced nominal precision is judged by its layer's
    own error against that precision (LayerDiagnosis.at_precision)."""
    if local is not None:
        measured = dataclasses.replace(measured, verdict=local.at_precision(measured.verdict))
    return LayerDrift(
        layer=layer.name, class_name=layer.class_name, depth=depth, divergence=measured, local=local
    )


def _common_samples(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both over the samples both hold: a backend whose stored outputs were capped holds
    only the first ones (an output reduced to a scalar has no samples to cap)."""
    if a.shape == b.shape or a.ndim == 0 or b.ndim == 0:
        return a, b
    samples = min(len(a), len(b))
    return a[:samples], b[:samples]


# Values of the layers measured in one batch: a small model's layers all at once (one
# numpy call per metric instead of one per layer), a big model's still a few at a time,
# as they are read from disk.
BATCH_VALUES = 2**20


def _batches(
    names: list[str], candidate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """The layers' (candidate, reference) pairs in order, in batches that end at the layer
    reaching BATCH_VALUES values; a layer is read only once the batch before has been
    measured."""
    batch: list[tuple[np.ndarray, np.ndarray]] = []
    values = 0
    for name in names:
        batch.append(_common_samples(candidate[name], reference[name]))
        values += batch[-1][0].size
        if values >= BATCH_VALUES:
            yield batch
            batch, values = [], 0
    if batch:
        yield batch


def compare(
    graph: ModelGraph,
    results: dict[str, BackendResult],
    *,
    against: str,
    modes: Iterable[Mode] = ("accumulated",),
    options: EngineOptions = DEFAULT_OPTIONS,
    diagnose: Diagnoser | None = None,
    backends: Collection[str] | None = None,
) -> list[Comparison]:
    """Every finished backend (of `backends`, when given) against `against`, in each mode
    both sides have; each row with its diagnosis when `diagnose` is given."""
    target = results.get(against)
    if target is None or target.status != BackendStatus.DONE:
        return []
    comparisons = []
    for backend, result in results.items():
        if backend == against or result.status != BackendStatus.DONE:
            continue
        if backends is not None and backend not in backends:
            continue
        for mode in modes:
            if mode not in result.outputs or mode not in target.outputs:
                continue
            candidate, reference = result.outputs[mode], target.outputs[mode]
            local = {} if diagnose is None else diagnose(backend, mode)
            layers = [
                (depth, layer)
                for depth, layer in enumerate(graph.compute_layers, start=1)
                if layer.name in candidate and layer.name in reference
            ]
            measured = [
                divergence
                for batch in _batches([layer.name for _, layer in layers], candidate, reference)
                for divergence in divergences(
                    batch, thresholds=options.thresholds, histogram_bins=options.histogram_bins
                )
            ]
            rows = [
                _row(layer, depth, divergence, local.get(layer.name))
                for (depth, layer), divergence in zip(layers, measured, strict=True)
            ]
            missing = tuple(
                layer.name
                for layer in graph.compute_layers
                if layer.name not in candidate or layer.name not in reference
            )
            comparisons.append(
                Comparison(
                    backend=backend, against=against, mode=mode, layers=rows, not_provided=missing
                )
            )
    return comparisons
