"""Aggregate queries over many stored runs, on SQLite and PostgreSQL, through HTTP,
while the service keeps working.

One real run of dense10x50 gives the divergence rows; they are stored again for
RUNS runs through the ORM with seeded, varied values. The two aggregate endpoints
are then timed from a client like any other while a new real run is started every
second, so most answers must take in rows that landed since the one before.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert, inspect, select
from sqlalchemy.orm import Session

from app.bench.backend_jobs import example_job
from app.bench.end_to_end import run_to_done, served
from app.bench.figures import Figure, percentile, timed
from app.core.db import make_engine
from app.data import drift_cache
from app.data.orm import LayerDivergence, Run
from driftbench.client import Client
from workers.engine.options import EngineOptions
from workers.engine.status import RunStatus

BACKENDS = ["keras-cpu", "numpy"]
CHUNK = 500


def _columns(row: LayerDivergence) -> dict[str, Any]:
    return {
        attribute.key: getattr(row, attribute.key)
        for attribute in inspect(LayerDivergence).column_attrs
        if attribute.key not in ("id", "run_id")
    }


def store_copies(url: str, template_run: int, count: int) -> None:
    """`count` more finished runs like `template_run`, with seeded variations of rel_l2."""
    rng = np.random.default_rng(0)
    engine = make_engine(url)
    with Session(engine) as session:
        template = session.get(Run, template_run)
        assert template is not None
        rows = [
            _columns(row)
            for row in session.scalars(select(LayerDivergence).filter_by(run_id=template_run))
        ]
        run_values = {
            "model_id": template.model_id,
            "input_set_id": template.input_set_id,
            "reference": template.reference,
            "modes": template.modes,
            "status": RunStatus.DONE,
            "attempts": 1,
        }
        for start in range(0, count, CHUNK):
            size = min(CHUNK, count - start)
            drift_cache.hold(session, template.model_id, template.model.architecture)
            run_ids = session.scalars(insert(Run).returning(Run.id), [run_values] * size).all()
            scale = rng.lognormal(0.0, 0.5, size=(size, len(rows)))
            session.execute(
                insert(LayerDivergence),
                [
                    {**row, "run_id": run_id, "rel_l2": row["rel_l2"] * float(factor)}
                    for run_id, factors in zip(run_ids, scale, strict=True)
                    for row, factor in zip(rows, factors, strict=True)
                ],
            )
            session.commit()
    engine.dispose()


def landing(client: Client, body: dict[str, Any], every_s: float, stop: threading.Event) -> int:
    """Start a run every `every_s` seconds until `stop`; how many of them finished."""
    run_ids = []
    while not stop.is_set():
        started = time.perf_counter()
        run_ids.append(client.start_run(**body)["id"])
        stop.wait(max(0.0, every_s - (time.perf_counter() - started)))
    done = [client.wait_for_run(run_id, timeout_s=600)["status"] for run_id in run_ids]
    return done.count(RunStatus.DONE)


def query_figures(
    directory: Path,
    database: str,
    url: str | None,
    runs: int,
    seconds: float,
    options: EngineOptions,
) -> list[Figure]:
    """The two aggregate endpoints over `runs` stored runs, asked one after the other for
    `seconds` while a real run (keras-cpu and numpy) is started every second."""
    artifact, _ = example_job("dense10x50", 8, directory, options)
    data_dir = directory / f"queries-{database}"
    with served(data_dir, url) as server, server.client(timeout_s=600) as client:
        model, body = client.prepare_run(artifact.path, BACKENDS, batch=8)
        run_to_done(client, body)
        started = time.perf_counter()
        store_copies(url or f"sqlite:///{data_dir.resolve() / 'driftbench.db'}", 1, runs - 1)
        insert_s = time.perf_counter() - started
        paths = {
            "model drift": f"/api/models/{model['id']}/drift?backend=keras-cpu",
            "depth drift": f"/api/drift/depth?architecture={model['architecture']}"
            "&backend=keras-cpu",
        }
        first = {
            label: timed(lambda path=path: client.get(path).raise_for_status(), 1, warmup=0)[0]
            for label, path in paths.items()
        }
        latencies: dict[str, list[float]] = {label: [] for label in paths}
        stop = threading.Event()
        with server.client(timeout_s=600) as lander, ThreadPoolExecutor(1) as pool:
            landed = pool.submit(landing, lander, body, 1.0, stop)
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                for label, path in paths.items():
                    latencies[label] += timed(
                        lambda path=path: client.get(path).raise_for_status(), 1, 0
                    )
            stop.set()
            landed_runs = landed.result()
    figures = []
    for label, measured in latencies.items():
        figures.append(
            Figure(
                f"{label}, first query of a server (state built from the rows), "
                f"{runs:,} runs, {database}",
                first[label] * 1000,
                "ms",
            )
        )
        figures.append(
            Figure(
                f"{label} p95 while a run lands every second, {runs:,} runs, {database}",
                percentile(measured, 95) * 1000,
                "ms",
                target=50.0,
                detail={
                    "p50_ms": percentile(measured, 50) * 1000,
                    "max_ms": max(measured) * 1000,
                    "requests": len(measured),
                    "runs_landed": landed_runs,
                    "duration_s": seconds,
                    "insert_s": insert_s,
                    "rows_per_run": len(BACKENDS) * len(artifact.graph.compute_layers),
                },
            )
        )
    return figures
