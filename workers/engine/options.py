"""Everything the engine reads from outside, passed in as one object.

The engine (model loading, inputs, runners, metrics, comparison) never reads the
service's settings: the service and the CLI build an `EngineOptions` from their
settings (`app.core.config.Settings.engine_options`) and hand it down, so the
engine can be used and tested on its own. Defaults are the documented settings'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from workers.engine.metrics import DEFAULT_THRESHOLDS, VerdictThresholds

MiB = 1024 * 1024


@dataclass(frozen=True)
class EngineOptions:
    thresholds: VerdictThresholds = field(default_factory=lambda: DEFAULT_THRESHOLDS)
    histogram_bins: int = 41
    max_unpacked_bytes: int = 2048 * MiB
    max_model_params: int = 250_000_000
    onednn: Literal["default", "on", "off"] = "default"
    keras_batch_size: int = 256
    tfjs_batch_size: int = 256
    chromium_path: Path = Path("/usr/bin/chromium")
    browser_job_timeout_s: float = 300.0
    backend_time_limit_s: float = 900.0
    c_compiler: str = "cc"
    c_compile_timeout_s: float = 300.0
    c_run_timeout_s: float = 240.0
    gpu_framework: Literal["auto", "tensorflow", "jax", "torch"] = "auto"
    gpu_allow_cpu_for_tests: bool = False
    # Seconds a run's diagnosis (local errors, hypotheses) may take; 0 turns it off.
    diagnosis_budget_s: float = 60.0


DEFAULT_OPTIONS = EngineOptions()
