"""Without the isolated mode a run's backends start at once, so the reference can be
stored after others: it then compares them, every pair once, each diagnosed (the
reference's outputs feed every diagnosis); a browser job hands its comparison to the
CPU's lane, and takes it back once its pages are done. Through a real server and its
job processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from app.service_process import LiveServer
from driftbench.client import Client, wait_for
from tests.support import hold, release, wait_until_held


@contextlib.contextmanager
def gated_server(tmp_path: Path) -> Iterator[tuple[Client, Path]]:
    """A live server whose jobs wait while their backend is held in the gate folder."""
    gate = tmp_path / "gate"
    server = LiveServer(tmp_path / "data", None, test_job_gate_dir=str(gate))
    with server, server.client() as client:
        yield client, gate


def assert_every_pair_diagnosed(
    client: Client, run_id: int, compared: dict[str, list[str]]
) -> None:
    """Against each target, a diagnosed row of each of its backends' three layers, once."""
    layers = ["dense_1", "dense_2", "dense_3"]
    for against, backends in compared.items():
        rows = client.divergence(run_id, against=against)["rows"]
        assert [(r["backend"], r["layer"]) for r in rows] == [
            (backend, layer) for backend in backends for layer in layers
        ], against
        assert all(r["local_verdict"] is not None for r in rows), rows


def test_a_reference_stored_last_compares_and_diagnoses_every_pair(
    example: Any, tmp_path: Path
) -> None:
    with gated_server(tmp_path) as (client, gate):
        hold(gate, "numpy-f64")
        try:
            run_id = client.queue_run(
                example("regression").path,
                ["tfjs-cpu", "tfjs-wasm", "keras-cpu"],
                batch=4,
                compare_against=["tfjs-cpu"],
            )["id"]
            wait_until_held(gate, run_id, "numpy-f64")

            def browser_done() -> bool:
                backends = client.get_run(run_id)["backend_runs"]
                return all(
                    b["status"] == "done" for b in backends if b["backend"].startswith("tfjs-")
                )

            # The browser's jobs did not wait for the held reference, nor compare without
            # it (the second of them against the target tfjs-cpu, undiagnosed).
            wait_for(browser_done, 120, "the TF.js jobs to finish while the reference is held")
            for against in ("numpy-f64", "tfjs-cpu"):
                assert client.divergence(run_id, against=against)["rows"] == [], against
        finally:
            release(gate, "numpy-f64")
        run = client.wait_for_run(run_id)
        assert run["status"] == "done", run
        assert_every_pair_diagnosed(
            client,
            run_id,
            {
                "numpy-f64": ["keras-cpu", "tfjs-cpu", "tfjs-wasm"],
                "tfjs-cpu": ["keras-cpu", "numpy-f64", "tfjs-wasm"],
            },
        )


def test_browser_jobs_hand_their_comparisons_on_and_take_them_back_when_idle(
    example: Any, tmp_path: Path
) -> None:
    """With the CPU's lane held on numpy, the first TF.js job hands its comparison on to
    the CPU's lane instead of comparing before the next page: it finishes only after the
    second page has started. The second, its lane's last, compares its own, and the
    browser's lane takes the first's back from the CPU's queue (small outputs, portable):
    both backends finish, compared and diagnosed against the reference and keras-cpu,
    while numpy is still held."""
    with gated_server(tmp_path) as (client, gate):
        hold(gate, "numpy")
        # The first page waits until the reference and keras-cpu are stored (the CPU's
        # lane, at a lower priority than the browser's, may otherwise come second), so
        # it has comparisons to hand on.
        hold(gate, "tfjs-cpu")
        try:
            run_id = client.queue_run(
                example("regression").path,
                ["keras-cpu", "numpy", "tfjs-cpu", "tfjs-wasm"],
                batch=4,
                compare_against=["keras-cpu"],
            )["id"]
            wait_until_held(gate, run_id, "numpy")
            release(gate, "tfjs-cpu")

            def browser_done() -> list[dict[str, Any]]:
                backends = client.get_run(run_id)["backend_runs"]
                return [
                    b
                    for b in backends
                    if b["backend"].startswith("tfjs-") and b["status"] == "done"
                ]

            wait_for(lambda: len(browser_done()) == 2, 120, "the TF.js backends to finish")
            first, second = sorted(browser_done(), key=lambda b: b["started_at"])
            assert datetime.fromisoformat(first["finished_at"]) > datetime.fromisoformat(
                second["started_at"]
            ), (first, second)
            for backend_run in (first, second):
                timings = backend_run["timings"]
                # What each job took until its outputs were stored: its page and more.
                assert timings["job"] >= timings["accumulated"], backend_run
                assert timings["compare"] > 0, backend_run
            statuses = {b["backend"]: b["status"] for b in client.get_run(run_id)["backend_runs"]}
            assert statuses["numpy"] == "running", statuses
        finally:
            release(gate, "tfjs-cpu")
            release(gate, "numpy")
        run = client.wait_for_run(run_id)
        assert run["status"] == "done", run
        assert_every_pair_diagnosed(
            client,
            run_id,
            {
                "numpy-f64": ["keras-cpu", "numpy", "tfjs-cpu", "tfjs-wasm"],
                "keras-cpu": ["numpy", "numpy-f64", "tfjs-cpu", "tfjs-wasm"],
            },
        )
