"""What running one backend produced: its outputs (or status and reason), timings and
environment. Running and comparing are separate steps joined by `BackendResult`s, so
stored outputs can be compared again later against any backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from workers.engine.graph import ModelGraph
from workers.engine.status import BackendStatus

Mode = Literal["accumulated", "isolated"]
MODES: tuple[Mode, ...] = ("accumulated", "isolated")
LayerOutputs = dict[str, np.ndarray]
LayerInputs = dict[str, list[np.ndarray]]


@dataclass
class BackendResult:
    backend: str
    status: BackendStatus = BackendStatus.QUEUED
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


def layer_inputs_from(
    graph: ModelGraph, inputs: dict[str, np.ndarray], outputs: LayerOutputs
) -> LayerInputs:
    """What each layer received in a run: the isolated mode's feed."""
    values = {**inputs, **outputs}
    return {layer.name: [values[name] for name in layer.inbound] for layer in graph.compute_layers}
