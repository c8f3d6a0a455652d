"""Big models end to end: ResNet50 (64x64, batch 8) and MobileNetV2 (96x96, batch 32) on
every CPU backend through the embedded service, each backend's job against its warm
floor, the peak resident memory of each job process (Chromium's included under the
browser's) and of the model parser's, and the bytes stored per backend run.

Each model gets a fresh server, so a job process's high-water mark is that model's.
The first run pays the exports, traces and shader compiles and is reported beside
the second, which is the one compared with the floors. Not in the default parts
(about 6 minutes on 2 cores): `driftbench bench --only big`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.bench.end_to_end import (
    bare_backend,
    cpu_backends,
    served,
    timed_run,
)
from app.bench.figures import Figure, median, timed
from app.bench.memory import peak_rss_mib
from app.core.config import MiB
from workers.backends.pool import RunnerPool
from workers.backends.registry import DEFAULT_REFERENCE
from workers.engine.inputs import InputRecipe, generate_inputs
from workers.engine.keras_env import import_keras
from workers.engine.loading import load_artifact
from workers.engine.zoo import application
from workers.processes.tree import command_name, descendants, parent_of, proc_file

BIG_MODELS = (("ResNet50", 64, 8), ("MobileNetV2", 96, 32))


def _write_application(architecture: str, side: int, directory: Path, onednn: bool) -> Path:
    path = directory / f"{architecture}_{side}.keras"
    application(architecture, side)(import_keras(onednn)).save(path)
    return path


def _job_seconds(backend_run: dict[str, Any]) -> float:
    """The backend's job until its outputs were stored, as the job timed it: its
    comparison on arrival, which no floor does, and (handed on) the wait in the CPU's
    lane left out."""
    return float(backend_run["timings"]["job"])


def _children(server_pid: int) -> set[int]:
    return {pid for pid in descendants(server_pid) if parent_of(pid) == server_pid}


def _process_peaks(server_pid: int, before_runs: set[int]) -> dict[str, float]:
    """The high-water RSS in MiB of each process the server started, with what that one
    started (Chromium) added in: each job process, named by capability (the one that
    started Chromium is the browser's), and the model parser's process, the one there
    before any run (it starts with the model's upload); multiprocessing's resource
    tracker (13 MiB) is left out."""
    peaks: dict[str, float] = {}
    for pid in _children(server_pid):
        if "resource_tracker" in (proc_file(pid, "cmdline") or ""):
            continue
        children = descendants(pid)
        total = peak_rss_mib(pid) + sum(peak_rss_mib(child) for child in children)
        if pid in before_runs:
            role = "model parser process"
        elif any(command_name(child).startswith("chrom") for child in children):
            role = "browser job process"
        else:
            role = "cpu job process"
        peaks[f"{role} {pid}"] = total
    return peaks


def big_model_figures(directory: Path, pool: RunnerPool) -> list[Figure]:
    figures: list[Figure] = []
    backends = cpu_backends(pool.options)
    for architecture, side, batch in BIG_MODELS:
        label = f"{architecture} {side}x{side}, batch {batch}"
        path = _write_application(architecture, side, directory, pool.options.onednn)
        artifact = load_artifact(path, pool.options)
        inputs = generate_inputs(
            InputRecipe("uniform", batch=batch, seed=0), artifact.graph.input_shapes
        )
        floors = {
            name: median(timed(bare_backend(pool, name, artifact, inputs, warm=True), 1))
            for name in [DEFAULT_REFERENCE, *backends]
        }
        data_dir = directory / f"big-{architecture}"
        with served(data_dir) as server, server.client(timeout_s=3600) as client:
            _, body = client.prepare_run(path, backends, batch=batch)
            before_runs = _children(server.pid)
            (first_s, first), (run_s, run) = timed_run(client, body), timed_run(client, body)
            peaks = _process_peaks(server.pid, before_runs)
        failed = {b["backend"]: b["reason"] for b in run["backend_runs"] if b["status"] != "done"}
        if run["status"] != "done" or failed:
            figures.append(
                Figure(f"{label}: did not finish", 0.0, "", detail={"failed": failed, "run": run})
            )
            continue
        first_jobs_s = {b["backend"]: _job_seconds(b) for b in first["backend_runs"]}
        for backend_run in run["backend_runs"]:
            name = backend_run["backend"]
            seconds = _job_seconds(backend_run)
            figures.append(
                Figure(
                    f"{label}: {name} job vs its warm floor",
                    seconds / floors[name],
                    "x",
                    detail={
                        "measured_s": seconds,
                        "baseline_s": floors[name],
                        "first_run_s": first_jobs_s[name],
                        "timings_s": backend_run["timings"],
                    },
                )
            )
        figures.append(
            Figure(
                f"{label}: POST /api/runs to done vs sum of warm floors",
                run_s / sum(floors.values()),
                "x",
                detail={
                    "measured_s": run_s,
                    "baseline_s": sum(floors.values()),
                    "first_run_s": first_s,
                },
            )
        )
        for process, peak in peaks.items():
            figures.append(Figure(f"{label}: peak RSS of the {process}", peak, "MiB"))
        stored = {
            stored.stem: stored.stat().st_size / MiB
            for stored in (data_dir / "outputs" / str(run["id"])).iterdir()
        }
        figures.append(
            Figure(
                f"{label}: stored outputs of the run ({len(stored)} backend runs)",
                sum(stored.values()),
                "MiB",
                detail={"stored_mib": stored},
            )
        )
    return figures
