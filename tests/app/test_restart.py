"""Runs interrupted by a server crash are re-run on the next start, or failed, never stuck."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session

from app.data.orm import Run
from app.service_process import LiveServer
from driftbench.client import wait_for
from tests.support import hold, release, wait_until_gone, wait_until_held


def test_run_killed_mid_job_is_rerun_after_restart(example: Any, tmp_path: Path) -> None:
    """Also: a backend is compared as it arrives, while the run's other backends run,
    and a run re-run after a restart keeps those rows without doubling them."""
    gate = tmp_path / "gate"
    server = LiveServer(tmp_path / "data", None, test_job_gate_dir=str(gate))
    server.start()
    try:
        hold(gate, "tfjs-cpu")
        with server.client() as client:
            model = example("cifar_cnn").path
            run_id = client.queue_run(model, ["numpy", "tfjs-cpu"], batch=8)["id"]
            job_pid = wait_until_held(gate, run_id, "tfjs-cpu")
            early = wait_for(
                lambda: client.divergence(run_id, backend="numpy")["rows"], 120, "numpy's rows"
            )
            assert client.get_run(run_id)["status"] == "running"
        server.kill()
        wait_until_gone(job_pid)
        release(gate, "tfjs-cpu")
        server.start()
        with server.client() as client:
            run = client.wait_for_run(run_id)
            rows = client.divergence(run_id)["rows"]
        assert run["status"] == "done", run
        assert run["attempts"] == 2
        statuses = {b["backend"]: b["status"] for b in run["backend_runs"]}
        assert statuses == {"numpy-f64": "done", "numpy": "done", "tfjs-cpu": "done"}
        assert len(rows) == 2 * 12  # one result set per backend, none duplicated
        assert [r for r in rows if r["backend"] == "numpy"] == early
    finally:
        server.stop()


def test_run_interrupted_too_often_is_failed_with_the_reason(example: Any, tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", None)
    server.start()
    with server.client() as client:
        run_id = client.queue_run(example("regression").path, ["numpy"], batch=2)["id"]
        client.wait_for_run(run_id)
    server.stop()
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'driftbench.db'}")
    with Session(engine) as session:
        session.execute(update(Run).where(Run.id == run_id).values(status="running", attempts=2))
        session.commit()
    server.start()
    try:
        with server.client() as client:
            run = client.get_run(run_id)
        assert run["status"] == "failed"
        assert run["error"].startswith("interrupted: the server stopped during this run 2 time(s)")
    finally:
        server.stop()
