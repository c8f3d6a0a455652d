"""Memory: the embedded server's peak RSS while it runs cifar_cnn at batch 256 on every
CPU backend, and the stored outputs per backend run against their cap."""

from __future__ import annotations

from pathlib import Path

import httpx

from app.bench.backend_jobs import example_job
from app.bench.end_to_end import cpu_backends, run_to_done
from app.bench.figures import Figure
from app.bench.served import run_body, served_app
from app.config import MiB, settings

MODEL, BATCH = "cifar_cnn", 256


def memory_figures(directory: Path) -> list[Figure]:
    artifact, _ = example_job(MODEL, 1, directory)
    data_dir = directory / "memory"
    with served_app(data_dir) as served, httpx.Client(base_url=served.url, timeout=900) as client:
        _, body = run_body(client, artifact.path, BATCH, cpu_backends())
        idle = served.peak_rss_mib()
        seconds = run_to_done(client, body)
        peak = served.peak_rss_mib()
        jobs = served.job_processes_peak_rss_mib()
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
            f"peak RSS of the job processes and their children in that run, summed "
            f"({len(jobs)} processes)",
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
