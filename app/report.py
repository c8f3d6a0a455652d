"""The full result of a drift run as plain JSON-ready data (what `--json` writes).

JSON has no Infinity or NaN, yet sqnr_db is +inf for identical outputs: non-finite
floats are written as the strings "inf", "-inf" and "nan".
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from workers.drift_job import BackendResult, Comparison
from workers.metrics import VerdictThresholds
from workers.model_loading import ModelArtifact


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def drift_report(
    model: ModelArtifact,
    inputs: dict[str, np.ndarray],
    input_label: str,
    *,
    reference: str,
    thresholds: VerdictThresholds,
    results: dict[str, BackendResult],
    comparisons: list[Comparison],
) -> dict[str, Any]:
    return jsonable(
        {
            "model": {
                "name": model.graph.name,
                "path": str(model.path),
                "sha256": model.sha256,
                "layers": [
                    {
                        "name": layer.name,
                        "class_name": layer.class_name,
                        "output_shape": list(layer.output_shape),
                        "params": layer.param_count,
                    }
                    for layer in model.graph.layers
                ],
            },
            "inputs": {
                "source": input_label,
                "arrays": {
                    name: {
                        "shape": list(array.shape),
                        "nonfinite": int(np.count_nonzero(~np.isfinite(array))),
                    }
                    for name, array in inputs.items()
                },
            },
            "reference": reference,
            "thresholds": asdict(thresholds),
            "backends": [result.summary() for result in results.values()],
            "comparisons": [comparison.summary() for comparison in comparisons],
        }
    )
