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
    bindparam,
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


# The seeded variations of the copies: each of a chunk's runs (its slot) has its own
# factor for each template row, sent once (CHUNK x rows); each chunk scales them by one
# more seeded factor. Per chunk only its runs' ids go through the driver (slot -> run):
# the database copies the rest of each row from its template (`insert ... select`),
# instead of 200,000 rows of 50 columns and their JSON coming through the driver (43 s
# on SQLite, 52 s on PostgreSQL, most of the query part), or 200,000 factors (10 s of
# PostgreSQL's 46).
_FACTORS = Table(
    "bench_copy_factors",
    MetaData(),
    Column("slot", Integer),
    Column("template_id", Integer),
    Column("factor", Float),
    prefixes=["TEMPORARY"],
)
_SLOTS = Table(
    "bench_copy_slots",
    MetaData(),
    Column("slot", Integer),
    Column("run_id", Integer),
    prefixes=["TEMPORARY"],
)


def _copy_rows() -> Insert:
    """Each factor's template row again, for the run in the factor's slot, its rel_l2
    scaled by the factor and by the chunk's `scale`."""
    rows = LayerDivergence.__table__
    template = rows.alias("template")
    columns = [column.name for column in rows.columns if column.name != "id"]
    values = {
        "run_id": _SLOTS.c.run_id,
        "rel_l2": template.c.rel_l2 * _FACTORS.c.factor * bindparam("scale", type_=Float),
    }
    copied = (
        select(*(values.get(name, template.c[name]) for name in columns))
        .join_from(_SLOTS, _FACTORS, _FACTORS.c.slot == _SLOTS.c.slot)
        .join(template, template.c.id == _FACTORS.c.template_id)
    )
    return insert(rows).from_select(columns, copied)


def store_copies(url: str, template_run: int, count: int) -> int:
    """`count` more finished runs like `template_run`, with seeded variations of rel_l2,
    on one connection (the temporary tables are its own); returns the rows a run has."""
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
        _SLOTS.create(connection)
        factors = rng.lognormal(0.0, 0.5, size=(max(1, min(CHUNK, count)), len(row_ids)))
        connection.execute(
            insert(_FACTORS),
            [
                {"slot": slot, "template_id": row_id, "factor": float(factor)}
                for slot, slot_factors in enumerate(factors)
                for row_id, factor in zip(row_ids, slot_factors, strict=True)
            ],
        )
        copy = _copy_rows()
        for start in range(0, count, CHUNK):
            size = min(CHUNK, count - start)
            drift_cache.hold(connection, model_id, architecture)
            run_ids = connection.scalars(
                insert(Run).returning(Run.id, sort_by_parameter_order=True), [run_values] * size
            ).all()
            connection.execute(
                insert(_SLOTS),
                [{"slot": slot, "run_id": run_id} for slot, run_id in enumerate(run_ids)],
            )
            connection.execute(copy, {"scale": float(rng.lognormal(0.0, 0.25))})
            connection.execute(delete(_SLOTS))
            connection.commit()
        _SLOTS.drop(connection)
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
