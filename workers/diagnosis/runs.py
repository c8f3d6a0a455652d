"""Diagnosing a run's backends: one `Diagnoser` per comparison job (or CLI run), each
backend and mode diagnosed once however many backends it is compared against, all
under the run's one time budget; and the same for an external port's stored outputs,
in the model parser's child process (the API process never loads the model)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from workers.backends.registry import backend_precision
from workers.diagnosis.diagnose import DIAGNOSIS_SAMPLES, Budget, diagnose_outputs
from workers.engine.compare import Diagnoser
from workers.engine.errors import InvalidRequest
from workers.engine.explanations import LayerDiagnosis
from workers.engine.graph import ModelGraph
from workers.engine.loading import load_artifact
from workers.engine.options import EngineOptions
from workers.engine.results import BackendResult, Mode

log = logging.getLogger(__name__)


def run_diagnoser(
    graph: ModelGraph,
    inputs: Mapping[str, np.ndarray],
    results: Mapping[str, BackendResult],
    *,
    fed_from: str,
    options: EngineOptions,
) -> Diagnoser | None:
    """Diagnoses backends of `results`; `fed_from` is the run's reference, whose outputs
    fed the isolated mode. None when diagnosis is off or the reference has no outputs."""
    source = results.get(fed_from)
    if options.diagnosis_budget_s <= 0 or source is None or "accumulated" not in source.outputs:
        return None
    fed: dict[str, np.ndarray] = {}  # read on first need: a comparison may need none
    budget = Budget(options.diagnosis_budget_s)
    found: dict[tuple[str, Mode], Mapping[str, LayerDiagnosis]] = {}

    def diagnose(backend: str, mode: Mode) -> Mapping[str, LayerDiagnosis]:
        if (backend, mode) not in found:
            if not fed:
                fed.update({**inputs, **source.outputs["accumulated"]})
            try:
                found[backend, mode] = diagnose_outputs(
                    graph,
                    results[backend].outputs[mode],
                    fed,
                    mode=mode,
                    budget=budget,
                    thresholds=options.thresholds,
                    precision=backend_precision(backend),
                    grids=output_grids(results[backend].environment, mode),
                )
            except Exception:  # the comparison stands without its diagnosis
                log.warning("diagnosing %s (%s) failed", backend, mode, exc_info=True)
                found[backend, mode] = {}
        return found[backend, mode]

    return diagnose


def output_grids(environment: Mapping[str, Any], mode: Mode) -> dict[str, tuple[float, float]]:
    """Each layer's 8-bit output grid (step, offset) from a quantized backend's
    environment record: `quantization.layer_output_scales[mode][layer] = [scale, zero point]`
    (the TFLite int8 backend writes it)."""
    scales = environment.get("quantization", {}).get("layer_output_scales") or {}
    return {
        layer: (float(scale), -float(scale) * int(zero_point))
        for layer, (scale, zero_point) in (scales.get(mode) or {}).items()
    }


def first_samples(layers: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What diagnosis reads of each array: its first samples."""
    return {name: np.asarray(layers[name][:DIAGNOSIS_SAMPLES]) for name in layers}


def _load(path: Path, prefix: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {
            key.removeprefix(prefix): archive[key][:DIAGNOSIS_SAMPLES]
            for key in archive.files
            if key.startswith(prefix)
        }


@lru_cache(maxsize=1)
def _stored_graph(path: str, options: EngineOptions) -> ModelGraph:
    """The parser's child keeps the last model it diagnosed against: loading it took 120
    ms of a 540 ms upload of cifar_cnn's outputs, and a port is uploaded again and again
    as it is fixed. A stored model's file is named by its sha256, so a path always holds
    the same model; its weights are made read-only, so no diagnosis can change them for
    the next one."""
    graph = load_artifact(Path(path), options).graph
    for layer in graph.layers:
        for weight in layer.weights.values():
            weight.flags.writeable = False
    return graph


def diagnose_files(
    path: str, options: EngineOptions, candidate_path: str, fed_path: str, modes: str
) -> dict[str, Any]:
    """Runs in the model parser's child: each of `modes` (JSON list) of the candidate
    (`candidate_path`: '<mode>/<layer>' arrays) diagnosed against the feed (`fed_path`:
    'fed/<name>', the model's inputs and the reference's outputs), as JSON-able dicts."""
    try:
        graph = _stored_graph(path, options)
    except InvalidRequest as error:
        return {"error": str(error)}
    fed = _load(Path(fed_path), "fed/")
    budget = Budget(options.diagnosis_budget_s)
    found: dict[str, Any] = {}
    for mode in json.loads(modes):
        outputs = _load(Path(candidate_path), f"{mode}/")
        diagnosed = diagnose_outputs(
            graph, outputs, fed, mode=mode, budget=budget, thresholds=options.thresholds
        )
        found[mode] = {layer: d.as_dict() for layer, d in diagnosed.items()}
    return found
