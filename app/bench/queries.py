"""Aggregate queries over many stored runs, on SQLite and PostgreSQL, through HTTP.

One real run of dense10x50 gives the divergence rows; they are stored again for
RUNS runs through the ORM with seeded, varied values, then the two aggregate
endpoints are timed from a client like any other.
"""

from __future__ import annotations

import time
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
            drift_cache.bump(session, template.model_id, template.model.architecture)
            session.commit()
    engine.dispose()


def query_figures(
    directory: Path,
    database: str,
    url: str | None,
    runs: int,
    requests: int,
    options: EngineOptions,
) -> list[Figure]:
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
        figures = []
        for label, path in paths.items():
            cold = timed(lambda path=path: client.get(path).raise_for_status(), 1, warmup=0)
            seconds = timed(lambda path=path: client.get(path).raise_for_status(), requests, 0)
            figures.append(
                Figure(
                    f"{label}, first query after the runs changed, {runs:,} runs, {database}",
                    cold[0] * 1000,
                    "ms",
                )
            )
            figures.append(
                Figure(
                    f"{label} p95, {runs:,} runs, {database}",
                    percentile(seconds, 95) * 1000,
                    "ms",
                    target=50.0,
                    detail={
                        "p50_ms": percentile(seconds, 50) * 1000,
                        "requests": requests,
                        "insert_s": insert_s,
                        "rows_per_run": len(BACKENDS) * len(artifact.graph.compute_layers),
                    },
                )
            )
    return figures
