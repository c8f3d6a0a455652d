"""`driftbench zoo`: every zoo model on every asked backend, one line per model.

The table says, per backend, how many layers got each verdict against the float64
reference and the worst layer's rel_l2, so one glance tells whether a backend runs
the models people ship within rounding; the exit status is 1 when any layer of any
backend is worse than rounding or any backend could not run a model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.cli.terminal_tables import format_number, render_table
from app.core.config import settings
from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.backends.registry import DEFAULT_REFERENCE, parse_backends
from workers.diagnosis.runs import run_diagnoser
from workers.engine.compare import compare
from workers.engine.errors import DriftbenchError, InvalidRequest
from workers.engine.inputs import generate_inputs
from workers.engine.keras_env import import_keras
from workers.engine.loading import load_artifact
from workers.engine.status import BackendStatus
from workers.engine.zoo import ZOO, ZooModel

ZOO_BACKENDS = ("keras-cpu", "numpy", "tfjs-cpu")
WITHIN_ROUNDING = frozenset({"identical", "rounding"})
# Counted beside the verdicts: nodes a backend computes inside others (TF.js's masks).
NOT_PROVIDED = "not provided"


@dataclass
class ZooRow:
    """One model's outcome: per backend its verdict counts (or why it did not run)."""

    model: str
    layers: int
    params: int
    seconds: float
    verdicts: dict[str, Counter[str]] = field(default_factory=dict)
    worst: dict[str, tuple[str, float]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def within_rounding(self) -> bool:
        return not self.failures and all(
            set(counts) <= WITHIN_ROUNDING | {NOT_PROVIDED} for counts in self.verdicts.values()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layers": self.layers,
            "params": self.params,
            "seconds": round(self.seconds, 2),
            "verdicts": {backend: dict(counts) for backend, counts in self.verdicts.items()},
            "worst_layer": {
                backend: {"layer": layer, "rel_l2": rel_l2}
                for backend, (layer, rel_l2) in self.worst.items()
            },
            "failures": self.failures,
            "within_rounding": self.within_rounding,
        }


def run_zoo_model(
    pool: RunnerPool, entry: ZooModel, backends: list[str], directory: Path
) -> ZooRow:
    """Build, save and load the model as a user's file, run it, compare against float64."""
    started = time.perf_counter()
    keras = import_keras(pool.options.onednn)
    model = entry.build(keras)
    path = directory / f"{entry.name}.keras"
    model.save(path)
    row = ZooRow(model=entry.name, layers=0, params=int(model.count_params()), seconds=0.0)
    try:
        artifact = load_artifact(path, pool.options)
    except DriftbenchError as error:
        row.failures["model"] = error.detail
        row.seconds = time.perf_counter() - started
        return row
    graph = artifact.graph
    row.layers = len(graph.compute_layers)
    inputs = generate_inputs(entry.inputs, graph.input_shapes, graph.input_dtypes)
    results = run_locally(pool, artifact, inputs, backends=backends, reference=DEFAULT_REFERENCE)
    for backend, result in results.items():
        if result.status != BackendStatus.DONE:
            row.failures[backend] = result.reason or str(result.status)
    if DEFAULT_REFERENCE not in row.failures:
        diagnose = run_diagnoser(
            graph, inputs, results, fed_from=DEFAULT_REFERENCE, options=pool.options
        )
        for comparison in compare(graph, results, against=DEFAULT_REFERENCE, diagnose=diagnose):
            counts = Counter(drift.divergence.verdict for drift in comparison.layers)
            if comparison.not_provided:
                counts[NOT_PROVIDED] = len(comparison.not_provided)
            row.verdicts[comparison.backend] = counts
            worst = max(comparison.layers, key=lambda drift: drift.divergence.rel_l2)
            row.worst[comparison.backend] = (worst.layer, worst.divergence.rel_l2)
    row.seconds = time.perf_counter() - started
    return row


def zoo_table(rows: list[ZooRow], backends: list[str]) -> str:
    header = ["model", "layers", "params", *backends, "time"]
    cells = []
    for row in rows:
        per_backend = []
        for backend in backends:
            if backend in row.failures:
                per_backend.append(row.failures[backend])
            elif backend in row.verdicts:
                counts = ", ".join(f"{n} {v}" for v, n in sorted(row.verdicts[backend].items()))
                per_backend.append(f"{counts}; worst {format_number(row.worst[backend][1])}")
            elif backend == DEFAULT_REFERENCE:
                per_backend.append(row.failures.get("model", "reference"))
            else:
                per_backend.append("not compared (no reference)")
        cells.append(
            [row.model, str(row.layers), f"{row.params:,}", *per_backend, f"{row.seconds:.1f} s"]
        )
    return render_table(header, cells)


def cmd_zoo(args: argparse.Namespace) -> int:
    names = list(ZOO) if args.models == "all" else args.models.split(",")
    unknown = [name for name in names if name not in ZOO]
    if unknown:
        raise InvalidRequest(f"unknown zoo model(s) {unknown}; the zoo holds {', '.join(ZOO)}")
    backends = [b for b in parse_backends(args.backends) if b != DEFAULT_REFERENCE]
    rows = []
    with RunnerPool(settings.engine_options()) as pool, tempfile.TemporaryDirectory() as directory:
        for name in names:
            rows.append(run_zoo_model(pool, ZOO[name], backends, Path(directory)))
            print(f"{name}: {rows[-1].seconds:.1f} s", flush=True)
    print()
    print(zoo_table(rows, [DEFAULT_REFERENCE, *backends]))
    if args.json:
        args.json.write_text(json.dumps([row.as_dict() for row in rows], indent=2))
    return 0 if all(row.within_rounding for row in rows) else 1


def add_zoo_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    zoo = commands.add_parser(
        "zoo", help="run the model zoo on every backend and print one verdict line per model"
    )
    zoo.add_argument("--models", default="all", help=f"comma-separated, from: {', '.join(ZOO)}")
    zoo.add_argument(
        "--backends",
        default=",".join(ZOO_BACKENDS),
        help="compared with numpy-f64, the float64 reference",
    )
    zoo.add_argument("--json", type=Path, help="also write the rows as JSON here")
    zoo.set_defaults(handler=cmd_zoo)
