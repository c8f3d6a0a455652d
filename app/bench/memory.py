"""Memory: the embedded server's peak RSS while it runs cifar_cnn at batch 256 on every
CPU backend, and the stored outputs per backend run against their cap."""

from __future__ import annotations

from pathlib import Path

from app.bench.backend_jobs import example_job
from app.bench.end_to_end import cpu_backends, run_to_done, served
from app.bench.figures import Figure
from app.core.config import MiB, settings
from workers.engine.options import EngineOptions
from workers.processes.tree import descendants, proc_file

MODEL, BATCH = "cifar_cnn", 256


def peak_rss_mib(pid: int) -> float:
    """A process's high-water resident memory (VmHWM), in MiB; read as every other /proc
    file is (workers/processes/tree.py)."""
    for line in (proc_file(pid, "status") or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def memory_figures(directory: Path, options: EngineOptions) -> list[Figure]:
    artifact, _ = example_job(MODEL, 1, directory, options)
    data_dir = directory / "memory"
    with served(data_dir) as server, server.client(timeout_s=900) as client:
        _, body = client.prepare_run(artifact.path, cpu_backends(options), batch=BATCH)
        idle = peak_rss_mib(server.pid)
        seconds = run_to_done(client, body)
        peak = peak_rss_mib(server.pid)
        # Every process under the server, by pid: the job processes and what they started
        # (Chromium), the model parser's process, multiprocessing's resource tracker.
        jobs = {pid: peak_rss_mib(pid) for pid in descendants(server.pid)}
        run = client.get("/api/runs?limit=1").json()["data"][0]
    stored = {
        path.stem: path.stat().st_size / MiB
        for path in (data_dir / "outputs" / str(run["id"])).iterdir()
    }
    notes = {
        b["backend"]: b["reason"]
        for b in run["backend_runs"]
        if "outputs capped" in (b["reason"] or "")
    }
    cap = settings.max_stored_output_bytes / MiB
    return [
        Figure(
            f"peak RSS of the embedded server running {MODEL}, batch {BATCH}, "
            f"{len(run['backend_runs'])} backends (its job processes apart)",
            peak,
            "MiB",
            detail={"idle_peak_mib": idle, "run_s": seconds},
        ),
        Figure(
            f"peak RSS of the server's child processes in that run (its job processes, "
            f"Chromium, the model parser's), summed ({len(jobs)} processes)",
            sum(jobs.values()),
            "MiB",
            detail={"peak_mib_by_pid": jobs},
        ),
        Figure(
            f"largest stored outputs of one backend run (cap {cap:.0f} MiB)",
            max(stored.values()),
            "MiB",
            target=cap,
            detail={"stored_mib": stored, "capped": notes},
        ),
    ]
