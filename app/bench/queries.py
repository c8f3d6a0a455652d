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
from sqlalchemy import (
    Column,
    Float,
    Insert,
    Integer,
    MetaData,
    Table,
    delete,
    func,
    insert,
    select,
)

from app.bench.backend_jobs import example_job
from app.bench.end_to_end import run_to_done, served
from app.bench.figures import Figure, percentile, timed
from app.core.db import make_engine
from app.data import drift_cache
from app.data.orm import LayerDivergence, Run, StoredModel
from driftbench.client import Client
from workers.engine.options import EngineOptions
from workers.engine.status import RunStatus

BACKENDS = ["keras-cpu", "numpy"]
CHUNK = 500


# The seeded variations of the copies, one row per copied row: the database copies the
# rest of each row from its template (`insert ... select`), instead of 200,000 rows of
# 50 columns and their JSON coming through the driver (43 s on SQLite, 52 s on
# PostgreSQL, most of the query part).
_FACTORS = Table(
    "bench_copy_factors",
    MetaData(),
    Column("run_id", Integer),
    Column("template_id", Integer),
    Column("factor", Float),
    prefixes=["TEMPORARY"],
)


def _copy_rows() -> Insert:
    """Each factor's template row again, for the factor's run, its rel_l2 scaled."""
    rows = LayerDivergence.__table__
    template = rows.alias("template")
    columns = [column.name for column in rows.columns if column.name != "id"]
    values = {"run_id": _FACTORS.c.run_id, "rel_l2": template.c.rel_l2 * _FACTORS.c.factor}
    copied = select(*(values.get(name, template.c[name]) for name in columns)).join_from(
        _FACTORS, template, template.c.id == _FACTORS.c.template_id
    )
    return insert(rows).from_select(columns, copied)


def store_copies(url: str, template_run: int, count: int) -> int:
    """`count` more finished runs like `template_run`, with seeded variations of rel_l2,
    on one connection (the factors' table is its own); returns the rows a run has."""
    rng = np.random.default_rng(0)
    engine = make_engine(url)
    with engine.connect() as connection:
        model_id, input_set_id, reference, modes, architecture = connection.execute(
            select(
                Run.model_id, Run.input_set_id, Run.reference, Run.modes, StoredModel.architecture
            )
            .join(StoredModel, StoredModel.id == Run.model_id)
            .where(Run.id == template_run)
        ).one()
        row_ids = connection.scalars(
            select(LayerDivergence.id).filter_by(run_id=template_run).order_by(LayerDivergence.id)
        ).all()
        run_values = {
            "model_id": model_id,
            "input_set_id": input_set_id,
            "reference": reference,
            "modes": modes,
            "status": RunStatus.DONE,
            "attempts": 1,
        }
        _FACTORS.create(connection)
        for start in range(0, count, CHUNK):
            size = min(CHUNK, count - start)
            drift_cache.hold(connection, model_id, architecture)
            run_ids = connection.scalars(
                insert(Run).returning(Run.id, sort_by_parameter_order=True), [run_values] * size
            ).all()
            scale = rng.lognormal(0.0, 0.5, size=(size, len(row_ids)))
            connection.execute(
                insert(_FACTORS),
                [
                    {"run_id": run_id, "template_id": row_id, "factor": float(factor)}
                    for run_id, factors in zip(run_ids, scale, strict=True)
                    for row_id, factor in zip(row_ids, factors, strict=True)
                ],
            )
            connection.execute(_copy_rows())
            connection.execute(delete(_FACTORS))
            connection.commit()
        _FACTORS.drop(connection)
        connection.commit()
    engine.dispose()
    return len(row_ids)


def stored_rows(url: str) -> int:
    """The divergence rows the database holds, counted apart from the copying."""
    engine = make_engine(url)
    with engine.connect() as connection:
        count = connection.scalar(select(func.count()).select_from(LayerDivergence))
    engine.dispose()
    return int(count or 0)


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
        database_url = url or f"sqlite:///{data_dir.resolve() / 'driftbench.db'}"
        rows_per_run = store_copies(database_url, 1, runs - 1)
        insert_s = time.perf_counter() - started
        rows_stored = stored_rows(database_url)
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
                    "rows_per_run": rows_per_run,
                    "rows_stored": rows_stored,
                },
            )
        )
    return figures
