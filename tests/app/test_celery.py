"""Scale-out: the API on the celery executor and PostgreSQL, real worker processes on Redis."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.service_process import LiveServer, LiveWorker, private_redis
from driftbench.client import Client, ServiceError, wait_for, wait_until_available
from tests.support import (
    hold,
    release,
    throwaway_postgres,
    wait_until_gone,
    wait_until_held,
)
from workers.processes.tree import parent_of
from workers.worker_registry import redis_py_url

WITHIN_ROUNDING = {"identical", "rounding"}


@pytest.fixture
def redis_broker() -> Iterator[str]:
    with private_redis() as broker:
        yield broker


@pytest.fixture
def cluster_env(redis_broker: str) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and a private Redis for one cluster."""
    with throwaway_postgres() as url:
        yield {
            "DRIFTBENCH_EXECUTOR": "celery",
            "DRIFTBENCH_BROKER_URL": redis_broker,
            "DRIFTBENCH_DATABASE_URL": url,
            "DRIFTBENCH_WORKER_HEARTBEAT_S": "2",
        }


def start_api(data_dir: Path, env: dict[str, str]) -> LiveServer:
    settings = {
        key.removeprefix("DRIFTBENCH_").lower(): value
        for key, value in env.items()
        if key != "DRIFTBENCH_DATABASE_URL"
    }
    server = LiveServer(data_dir, env["DRIFTBENCH_DATABASE_URL"], **settings)
    server.start()
    return server


def upload(client: Client, path: Path, batch: int, kind: str = "uniform") -> tuple[int, int]:
    model_id = client.upload_model(path)["id"]
    return model_id, client.add_inputs(model_id, kind=kind, batch=batch)["id"]


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
            with pytest.raises(ServiceError) as refused:
                client.start_run(
                    model_id=model_id, input_set_id=input_id, backends=["numpy", "tfjs-cpu"]
                )
            assert refused.value.status_code == 422
            assert "no live worker serves queue 'browser'" in refused.value.detail

            workers.append(LiveWorker(data_dir, cluster_env, "browser").start())
            wait_until_available(client, ["tfjs-cpu", "tfjs-webgl"])
            backends = ["keras-cpu", "numpy", "tfjs-cpu", "tfjs-webgl"]
            created = client.start_run(
                model_id=model_id,
                input_set_id=input_id,
                backends=backends,
                modes=["accumulated", "isolated"],
            )
            run = client.wait_for_run(created["id"])
            assert run["status"] == "done", run
            statuses = {b["backend"]: b["status"] for b in run["backend_runs"]}
            assert statuses == {b: "done" for b in ["numpy-f64", *backends]}
            tfjs = next(b for b in run["backend_runs"] if b["backend"] == "tfjs-webgl")
            assert "SwiftShader" in tfjs["environment"]["webgl_renderer"]
            for mode in ("accumulated", "isolated"):
                rows = client.divergence(run["id"], mode=mode)["rows"]
                assert sorted({r["backend"] for r in rows}) == sorted(backends)
                assert len(rows) == len(backends) * 10
                assert {r["verdict"] for r in rows} <= WITHIN_ROUNDING
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


@pytest.fixture
def held_env(cluster_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A cluster whose jobs can be held mid-run, and re-delivered 5 s after a worker dies."""
    return {
        **cluster_env,
        "DRIFTBENCH_BROKER_VISIBILITY_TIMEOUT_S": "5",
        "DRIFTBENCH_TEST_JOB_GATE_DIR": str(tmp_path / "gate"),
    }


def test_killed_worker_job_is_redelivered_and_stored_once(
    held_env: dict[str, str], example: Any, tmp_path: Path
) -> None:
    env, gate = held_env, Path(held_env["DRIFTBENCH_TEST_JOB_GATE_DIR"])
    data_dir = tmp_path / "shared"
    server = start_api(data_dir, env)
    first = LiveWorker(data_dir, env, "cpu").start()
    second = None
    try:
        with server.client() as client:
            wait_until_available(client, ["numpy-f64"])
            model_id, input_id = upload(client, example("cifar_cnn").path, 8)
            hold(gate, "numpy-f64")
            run_id = client.start_run(model_id=model_id, input_set_id=input_id, backends=["numpy"])[
                "id"
            ]
            job_pid = wait_until_held(gate, run_id, "numpy-f64")
            first.kill()
            wait_until_gone(job_pid)
            release(gate, "numpy-f64")
            second = LiveWorker(data_dir, env, "cpu").start()
            run = client.wait_for_run(run_id, timeout_s=300)
            assert run["status"] == "done", run
            reference = next(b for b in run["backend_runs"] if b["backend"] == "numpy-f64")
            assert reference["status"] == "done" and reference["attempts"] == 2
            rows = client.divergence(run_id)["rows"]
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


def test_crashed_job_fails_once_and_the_worker_lives_on(
    held_env: dict[str, str], example: Any, tmp_path: Path
) -> None:
    """The worker supervises its job process: a segfault there fails the backend with the
    reason and the task is acknowledged, so the broker never delivers it again."""
    env, gate = held_env, Path(held_env["DRIFTBENCH_TEST_JOB_GATE_DIR"])
    data_dir = tmp_path / "shared"
    server = start_api(data_dir, env)
    worker = LiveWorker(data_dir, env, "cpu").start()
    broker = redis.Redis.from_url(redis_py_url(env["DRIFTBENCH_BROKER_URL"]))
    try:
        with server.client() as client:
            wait_until_available(client, ["numpy", "keras-cpu"])
            model_id, input_id = upload(client, example("regression").path, 4)
            body = {"model_id": model_id, "input_set_id": input_id, "backends": ["keras-cpu"]}
            hold(gate, "keras-cpu")
            run_id = client.start_run(**body)["id"]
            job_pid = wait_until_held(gate, run_id, "keras-cpu")
            assert worker.process is not None
            worker_pid = worker.process.pid
            assert parent_of(job_pid) == worker_pid
            os.kill(job_pid, signal.SIGSEGV)
            release(gate, "keras-cpu")
            run = client.wait_for_run(run_id)
            wait_for(
                lambda: broker.hlen("unacked") == 0 and broker.llen("cpu") == 0,
                timeout_s=30,
                what="the broker to hold no unacknowledged or queued job",
            )
            following = client.wait_for_run(client.start_run(**body)["id"])
            crashed = client.get_run(run_id)
        assert worker.process.poll() is None and worker.process.pid == worker_pid
        keras_cpu = next(b for b in crashed["backend_runs"] if b["backend"] == "keras-cpu")
        assert run["status"] == "done", run
        assert keras_cpu["status"] == "failed"
        assert keras_cpu["reason"] == "crashed: keras-cpu job process killed by SIGSEGV (signal 11)"
        assert keras_cpu["attempts"] == 1
        assert following["status"] == "done"
        assert {b["status"] for b in following["backend_runs"]} == {"done"}
    finally:
        release(gate, "keras-cpu")
        broker.close()
        worker.stop()
        server.stop()
