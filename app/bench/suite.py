"""Every benchmark in one process run, the report as JSON and as a table."""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.bench.backend_jobs import keras_vs_predict, numpy_vs_keras
from app.bench.big_models import big_model_figures
from app.bench.c_jobs import c_figures
from app.bench.diagnosis import diagnosis_figures
from app.bench.end_to_end import end_to_end
from app.bench.external_uploads import external_figures
from app.bench.figures import Figure, table
from app.bench.jax_jobs import jax_figures
from app.bench.job_isolation import isolation_figures
from app.bench.memory import memory_figures
from app.bench.queries import query_figures
from app.bench.quiet import WINDOW_S, wait_until_idle
from app.bench.tfjs_pages import tfjs_figures
from app.bench.tflite_jobs import tflite_figures
from app.bench.throughput import throughput_figures
from app.core.config import settings
from app.service_process import postgres_database
from workers.backends.pool import RunnerPool
from workers.engine.keras_env import import_keras
from workers.engine.options import EngineOptions

PARTS = (
    "keras",
    "numpy",
    "tfjs",
    "tflite",
    "c",
    "jax",
    "external",
    "e2e",
    "isolation",
    "queries",
    "memory",
    "diagnosis",
)
# Parts run only when asked for by name (`--only big`): too long for `make bench`.
OPTIONAL_PARTS = ("big", "throughput")


def _queries(
    directory: Path, runs: int, seconds: float, postgres_admin_url: str, options: EngineOptions
) -> list[Figure]:
    figures = query_figures(directory, "sqlite", None, runs, seconds, options)
    try:
        with postgres_database(postgres_admin_url, prefix="driftbench_bench") as url:
            figures += query_figures(directory, "postgresql", url, runs, seconds, options)
    except OSError as error:
        figures.append(
            Figure("queries on postgresql: not measured", 0.0, "", detail={"reason": str(error)})
        )
    return figures


def run_bench(
    parts: list[str],
    out: Path,
    *,
    repeats: int,
    runs: int,
    query_seconds: float,
    postgres_admin_url: str,
    idle_wait_s: float,
    progress: Callable[[str], None] = print,
) -> list[Figure]:
    """Run the chosen parts; write `out` (JSON) and return the figures."""
    figures: list[Figure] = []
    seconds: dict[str, float] = {}
    waited: dict[str, float] = {}
    # One pool of warm runners for every part that runs backends in this process.
    options = settings.engine_options()
    import_keras(options.onednn)  # before an example model's build imports TensorFlow
    with (
        tempfile.TemporaryDirectory(prefix="driftbench-bench-") as scratch,
        RunnerPool(options) as pool,
    ):
        directory = Path(scratch)
        steps: dict[str, Callable[[], list[Figure]]] = {
            "keras": lambda: keras_vs_predict(directory, repeats, pool),
            "numpy": lambda: numpy_vs_keras(directory, repeats, pool),
            "tfjs": lambda: (
                tfjs_figures(directory, repeats, "dense10x50", 256, pool)
                + tfjs_figures(directory, repeats, "cifar_cnn", 8, pool)
            ),
            "tflite": lambda: tflite_figures(directory, repeats, pool),
            "c": lambda: c_figures(directory, repeats, pool),
            "jax": lambda: jax_figures(directory, repeats, pool),
            "external": lambda: external_figures(directory, repeats, pool),
            "e2e": lambda: end_to_end(directory, repeats, pool),
            "isolation": lambda: isolation_figures(directory, repeats, options),
            "queries": lambda: _queries(
                directory, runs, query_seconds, postgres_admin_url, options
            ),
            "memory": lambda: memory_figures(directory, options),
            "diagnosis": lambda: diagnosis_figures(directory, repeats, pool),
            "big": lambda: big_model_figures(directory, pool),
            "throughput": lambda: throughput_figures(directory, options, postgres_admin_url),
        }
        for part in parts:
            waited[part] = wait_until_idle(idle_wait_s)
            if waited[part] > 2 * WINDOW_S:
                progress(f"({part}: waited {waited[part]:.1f} s for the machine to be idle)")
            started = time.perf_counter()
            new = steps[part]()
            seconds[part] = time.perf_counter() - started
            figures += new
            progress(table(new).split("\n", 2)[2])
    report: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "parts_s": seconds,
        "idle_wait_s": waited,
        "figures": [figure.as_dict() for figure in figures],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    return figures
