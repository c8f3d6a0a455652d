"""Scale-out: the API on the celery executor and PostgreSQL, real worker processes on Redis."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.live_server import (
    LiveServer,
    LiveWorker,
    postgres_database,
    wait_for_run,
    wait_until_available,
    wait_until_backend_running,
)

WITHIN_ROUNDING = {"identical", "rounding"}


@pytest.fixture
def cluster_env() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and an empty Redis database for one cluster."""
    redis_db = random.randint(1, 15)
    broker = f"redis://127.0.0.1:6379/{redis_db}"
    redis.Redis.from_url(broker).flushdb()
    with postgres_database() as url:
        yield {
            "DRIFTBENCH_EXECUTOR": "celery",
            "DRIFTBENCH_BROKER_URL": broker,
            "DRIFTBENCH_DATABASE_URL": url,
            "DRIFTBENCH_WORKER_HEARTBEAT_S": "2",
        }
    redis.Redis.from_url(broker).flushdb()


def start_api(data_dir: Path, env: dict[str, str]) -> LiveServer:
    settings = {
        key.removeprefix("DRIFTBENCH_").lower(): value
        for key, value in env.items()
        if key != "DRIFTBENCH_DATABASE_URL"
    }
    server = LiveServer(data_dir, env["DRIFTBENCH_DATABASE_URL"], **settings)
    server.start()
    return server


def upload(client: httpx.Client, path: Path, batch: int, kind: str = "uniform") -> tuple[int, int]:
    with path.open("rb") as stream:
        model_id = client.post("/api/models", files={"file": (path.name, stream)}).json()["id"]
    input_id = client.post(
        f"/api/models/{model_id}/inputs", json={"kind": kind, "batch": batch}
    ).json()["id"]
    return model_id, input_id


def test_cpu_and_browser_workers_serve_a_run(
    cluster_env: dict[str, str], example: Any, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared"
    server = start_api(data_dir, cluster_env)
    workers = [LiveWorker(data_dir, cluster_env, "cpu").start()]
    try:
        with server.client() as client:
            wait_until_available(client, ["numpy", "keras-cpu", "numpy-f64"])
            model_id, input_id = upload(client, example("dense10x50").path, 2, "ones")
            refused = client.post(
                "/api/runs",
                json={
                    "model_id": model_id,
                    "input_set_id": input_id,
                    "backends": ["numpy", "tfjs-cpu"],
                },
            )
            assert refused.status_code == 422
            assert "no live worker serves queue 'browser'" in refused.json()["detail"]

            workers.append(LiveWorker(data_dir, cluster_env, "browser").start())
            wait_until_available(client, ["tfjs-cpu", "tfjs-webgl"])
            backends = ["keras-cpu", "numpy", "tfjs-cpu", "tfjs-webgl"]
            created = client.post(
                "/api/runs",
                json={
                    "model_id": model_id,
                    "input_set_id": input_id,
                    "backends": backends,
                    "modes": ["accumulated", "isolated"],
                },
            )
            assert created.status_code == 202, created.text
            run = wait_for_run(client, created.json()["id"])
            assert run["status"] == "done", run
            statuses = {b["backend"]: b["status"] for b in run["backend_runs"]}
            assert statuses == {b: "done" for b in ["numpy-f64", *backends]}
            tfjs = next(b for b in run["backend_runs"] if b["backend"] == "tfjs-webgl")
            assert "SwiftShader" in tfjs["environment"]["webgl_renderer"]
            for mode in ("accumulated", "isolated"):
                rows = client.get(
                    f"/api/runs/{run['id']}/divergence", params={"mode": mode}
                ).json()["rows"]
                assert sorted({r["backend"] for r in rows}) == sorted(backends)
                assert len(rows) == len(backends) * 10
                assert {r["verdict"] for r in rows} <= WITHIN_ROUNDING
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


def test_killed_worker_job_is_redelivered_and_stored_once(
    cluster_env: dict[str, str], example: Any, tmp_path: Path
) -> None:
    env = {**cluster_env, "DRIFTBENCH_BROKER_VISIBILITY_TIMEOUT_S": "5"}
    data_dir = tmp_path / "shared"
    server = start_api(data_dir, env)
    first = LiveWorker(data_dir, env, "cpu").start()
    second = None
    try:
        with server.client() as client:
            wait_until_available(client, ["numpy-f64"])
            model_id, input_id = upload(client, example("cifar_cnn").path, 256)
            run_id = client.post(
                "/api/runs",
                json={"model_id": model_id, "input_set_id": input_id, "backends": ["numpy"]},
            ).json()["id"]
            wait_until_backend_running(client, run_id, "numpy-f64")
            first.kill()
            second = LiveWorker(data_dir, env, "cpu").start()
            run = wait_for_run(client, run_id, timeout_s=300)
            assert run["status"] == "done", run
            reference = next(b for b in run["backend_runs"] if b["backend"] == "numpy-f64")
            assert reference["status"] == "done" and reference["attempts"] == 2
            rows = client.get(f"/api/runs/{run_id}/divergence").json()["rows"]
            assert [r["backend"] for r in rows] == ["numpy"] * 12
            assert sorted(p.name for p in (data_dir / "outputs" / str(run_id)).iterdir()) == [
                "numpy-f64.npz",
                "numpy.npz",
            ]
    finally:
        first.kill()
        if second is not None:
            second.stop()
        server.stop()
