"""The full result of a drift run as plain JSON-ready data (what `--json` writes)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from workers.engine.compare import Comparison
from workers.engine.json_safe import jsonable
from workers.engine.loading import ModelArtifact
from workers.engine.metrics import VerdictThresholds
from workers.engine.results import BackendResult


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
                        "dtype": array.dtype.name,
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
