"""Drift aggregates kept incrementally: after runs land, after a restart and after a
model is deleted, every answer matches the exact one computed here from the stored rows
(count, mean, max, growth exactly; median and p95 within the sketch's ALPHA)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from app.bench.queries import store_copies
from app.data.drift_cache import DriftState, RowBatch
from app.data.quantile_sketch import ALPHA
from app.service_process import LiveServer
from driftbench.client import Client
from tests.support import dense_stack, throwaway_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'driftbench.db'}"
    else:
        with throwaway_postgres() as url:
            yield url


def stored_rel_l2(database_url: str, column: str, value: Any) -> dict[int, dict[int, float]]:
    """{run: {depth: rel_l2}} of numpy against numpy-f64, accumulated, read with plain SQL."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                f"SELECT run_id, depth, rel_l2 FROM layer_divergences WHERE {column} = :value "
                "AND backend = 'numpy' AND against = 'numpy-f64' AND mode = 'accumulated'"
            ),
            {"value": value},
        ).all()
    engine.dispose()
    runs: dict[int, dict[int, float]] = defaultdict(dict)
    for run_id, depth, rel_l2 in rows:
        runs[run_id][depth] = rel_l2
    return runs


def nearest_rank(values: list[float], fraction: float) -> float:
    return sorted(values)[max(1, math.ceil(fraction * len(values))) - 1]


def check_against_rows(depths: list[dict[str, Any]], runs: dict[int, dict[int, float]]) -> None:
    assert [row["depth"] for row in depths] == sorted({d for run in runs.values() for d in run})
    for row in depths:
        depth = row["depth"]
        values = [run[depth] for run in runs.values() if depth in run]
        assert row["count"] == len(values)
        assert row["mean"] == pytest.approx(sum(values) / len(values), rel=1e-9)
        assert row["max"] == max(values)
        for key, fraction in (("median", 0.5), ("p95", 0.95)):
            exact = nearest_rank(values, fraction)
            assert abs(row[key] - exact) <= ALPHA * exact, (depth, key)
        if "growth" in row:
            steps = [run[depth] / run[depth - 1] for run in runs.values() if depth - 1 in run]
            if steps:
                assert row["growth"] == pytest.approx(sum(steps) / len(steps), rel=1e-9)
            else:
                assert row["growth"] is None


def test_answers_follow_new_runs_restarts_and_deletions(
    keras: Any, tmp_path: Path, database_url: str
) -> None:
    server = LiveServer(tmp_path / "data", database_url)
    server.start()
    try:
        with server.client() as client:
            models, run_ids = [], []
            for seed in (1, 2):
                path = dense_stack(keras, seed, tmp_path / f"stack{seed}.keras")
                run = client.queue_run(path, ["numpy"], batch=4)
                assert client.wait_for_run(run["id"])["status"] == "done"
                models.append(client.get(f"/api/models/{run['model_id']}").json())
                run_ids.append(run["id"])
            architecture = models[0]["architecture"]
            assert models[1]["architecture"] == architecture

            def check(client: Client, model_count: int) -> None:
                layers = model_drift(client, models[0]["id"])
                check_against_rows(layers, stored_rel_l2(database_url, "model_id", models[0]["id"]))
                depth = client.get(
                    "/api/drift/depth", params={"architecture": architecture, "backend": "numpy"}
                ).json()
                assert depth["models"] == model_count
                check_against_rows(
                    depth["depths"], stored_rel_l2(database_url, "architecture", architecture)
                )

            check(client, 2)  # built from the rows
            store_copies(database_url, run_ids[0], 150)
            store_copies(database_url, run_ids[1], 60)
            check(client, 2)  # the kept states caught up with 210 runs
            check(client, 2)  # and answer again unchanged
        server.stop()
        store_copies(database_url, run_ids[0], 40)
        server.start()
        with server.client() as client:
            check(client, 2)  # a new process: from the stored states, then the new runs
            assert client.delete(f"/api/models/{models[1]['id']}").status_code == 204
            check(client, 1)  # rows removed: rebuilt
    finally:
        server.stop()


def model_drift(client: Client, model_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/models/{model_id}/drift", params={"backend": "numpy"})
    response.raise_for_status()
    layers: list[dict[str, Any]] = response.json()["layers"]
    return layers


def test_stored_rows_reach_the_same_state_in_any_number_of_catch_ups() -> None:
    """Folding rows in batches of any size gives the same sketches and growth sums as
    one fold: what makes catching up after each run equal to a rebuild."""
    rng = np.random.default_rng(5)
    runs, depths = np.repeat(np.arange(300), 6), np.tile(np.arange(1, 7), 300)
    values = rng.lognormal(-14, 1.0, runs.size)
    values[::17] = 0.0
    batch = RowBatch(
        ids=np.arange(1, runs.size + 1),
        runs=runs,
        models=runs % 3,
        depths=depths,
        layers=[f"d{d}" for d in depths],
        classes=["Dense"] * runs.size,
        values=values,
    )
    whole = DriftState(version=0)
    whole.fold(batch)
    pieces = DriftState(version=0)
    for start in range(0, runs.size, 6 * 7):  # seven runs at a time
        part = slice(start, start + 6 * 7)
        pieces.fold(
            RowBatch(
                batch.ids[part],
                batch.runs[part],
                batch.models[part],
                batch.depths[part],
                batch.layers[part],
                batch.classes[part],
                batch.values[part],
            )
        )
    assert pieces.mark == whole.mark == runs.size
    assert pieces.models == {0, 1, 2}
    for depth, state in whole.depths.items():
        other = pieces.depths[depth]
        assert other.values.positive == state.values.positive
        assert other.values.zeros == state.values.zeros
        assert other.growth_count == state.growth_count
        assert other.growth_total == pytest.approx(state.growth_total, rel=1e-12)
