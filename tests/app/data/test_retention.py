"""Stored layer outputs expire by age: the files of old runs go, their metrics and
divergence rows stay, and what needs the arrays answers 410 saying so."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from app.data.orm import Base
from app.service_process import LiveServer
from driftbench.client import Client, wait_for
from tests.support import backdate, expire_outputs_cli, throwaway_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'driftbench.db'}"
    else:
        with throwaway_postgres() as url:
            yield url


def schema_differences(database_url: str) -> list[Any]:
    """What Alembic would still have to change for the migrated database to match the ORM."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    return differences


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.npz")}


def run_if_expired(client: Client, run_id: int) -> dict | None:
    run = client.get_run(run_id)
    return run if all(b["outputs_expired_at"] for b in run["backend_runs"]) else None


def test_outputs_of_old_runs_expire_and_their_metrics_remain(
    example: Any, tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    server = LiveServer(data_dir, database_url)
    server.start()
    try:
        with server.client() as client:
            model = example("dense10x50").path
            old_id = client.queue_run(model, ["numpy"], batch=4)["id"]
            recent_id = client.queue_run(model, ["numpy"], batch=4)["id"]
            for run_id in (old_id, recent_id):
                assert client.wait_for_run(run_id)["status"] == "done"
            rows_before = client.get(f"/api/runs/{old_id}/divergence").json()
            csv_before = client.get(f"/api/runs/{old_id}/divergence?format=csv").text
            assert len(rows_before["rows"]) == 10
            old_run = client.get(f"/api/runs/{old_id}").json()
            assert all(b["outputs_expired_at"] is None for b in old_run["backend_runs"])
        server.stop()
        assert schema_differences(database_url) == []  # migration 0004 matches the ORM
        recent_files = file_hashes(data_dir / "outputs" / str(recent_id))
        assert set(recent_files) == {"numpy.npz", "numpy-f64.npz"}
        backdate(database_url, old_id, days=1.5)
        backdate(database_url, recent_id, days=0.5)

        server.settings["output_retention_days"] = "1"
        server.start()
        with server.client() as client:
            expired = wait_for(
                lambda: run_if_expired(client, old_id), 60, "the sweep at server start"
            )
            expired_at = datetime.fromisoformat(expired["backend_runs"][0]["outputs_expired_at"])
            assert abs(datetime.now(UTC) - expired_at) < timedelta(minutes=5)
            assert not (data_dir / "outputs" / str(old_id)).exists()
            assert {b["status"] for b in expired["backend_runs"]} == {"done"}
            assert client.get(f"/api/runs/{old_id}/divergence").json() == rows_before
            assert client.get(f"/api/runs/{old_id}/divergence?format=csv").text == csv_before

            gone = client.get(f"/api/runs/{old_id}/outputs/numpy/dense_1")
            assert gone.status_code == 410
            assert gone.json()["detail"] == (
                f"outputs expired: the layer outputs of run {old_id} backend numpy were deleted "
                f"on {expired_at:%Y-%m-%d} after DRIFTBENCH_OUTPUT_RETENTION_DAYS=1 days; "
                "its metrics and divergence rows remain"
            )
            # Against another backend, a comparison never made before needs the arrays.
            other = client.post(f"/api/runs/{old_id}/comparisons", json={"against": "numpy"})
            assert other.status_code == 410
            assert other.json()["detail"].startswith(
                f"outputs expired: the layer outputs of run {old_id} backend numpy were"
            )

            recent = client.get(f"/api/runs/{recent_id}").json()
            assert all(b["outputs_expired_at"] is None for b in recent["backend_runs"])
            assert file_hashes(data_dir / "outputs" / str(recent_id)) == recent_files
            tensor = client.get(f"/api/runs/{recent_id}/outputs/numpy/dense_1")
            assert tensor.status_code == 200
            with np.load(data_dir / "outputs" / str(recent_id) / "numpy.npz") as stored:
                assert np.array_equal(
                    np.load(io.BytesIO(tensor.content)), stored["accumulated/dense_1"]
                )
    finally:
        server.stop()


def test_the_cli_expires_outputs_once_and_says_what_it_deleted(
    example: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    database_url = f"sqlite:///{data_dir / 'driftbench.db'}"
    server = LiveServer(data_dir, None)
    server.start()
    try:
        with server.client() as client:
            run_id = client.queue_run(example("regression").path, ["numpy"], batch=8)["id"]
            assert client.wait_for_run(run_id)["status"] == "done"
            outputs = data_dir / "outputs" / str(run_id)
            size = sum(path.stat().st_size for path in outputs.glob("*.npz"))

            unset = expire_outputs_cli(data_dir)
            assert unset.returncode == 2
            assert "set DRIFTBENCH_OUTPUT_RETENTION_DAYS" in unset.stderr
            kept = expire_outputs_cli(data_dir, output_retention_days="1")
            assert kept.returncode == 0, kept.stderr
            assert kept.stdout.startswith("deleted the layer outputs of 0 run(s) finished")
            assert outputs.exists()

            backdate(database_url, run_id, days=3)
            swept = expire_outputs_cli(data_dir, output_retention_days="2")
            assert swept.returncode == 0, swept.stderr
            assert swept.stdout.startswith(
                f"deleted the layer outputs of 1 run(s) finished more than 2 days ago "
                f"(2 backend runs): {size} bytes"
            ), swept.stdout
            assert not outputs.exists()
            run = client.get(f"/api/runs/{run_id}").json()
            assert all(b["outputs_expired_at"] for b in run["backend_runs"])
            again = expire_outputs_cli(data_dir, output_retention_days="2")
            assert (
                "0 run(s) finished more than 2 days ago (0 backend runs): 0 bytes" in again.stdout
            )
    finally:
        server.stop()
