"""A job process that crashes, is killed, runs out of memory or over time fails its backend
with the reason; the server lives on, the next run is done, nothing stored changes.

Each fault is injected into a live server's job process while the job is provably
mid-run (held by DRIFTBENCH_TEST_JOB_GATE_DIR), with oneDNN on and off: under
oneDNN TensorFlow segfaults where it would otherwise raise, so both must hold.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.service_process import LiveServer
from driftbench.client import Client, wait_for
from tests.support import hold, release, wait_until_held
from workers.processes.tree import chromium_processes, is_running, parent_of

MEMORY_LIMIT = 2 * 1024**3  # a warm keras-cpu job process holds about 0.7 GB
TIME_LIMIT_S = 30  # pages fault in at about 0.25 GB/s on small VMs
CPU_JOB_NICE = 7  # not the default: the setting reaches the job processes
STORED_FOLDERS = ("models", "inputs", "outputs")


@dataclass
class FaultyServer:
    server: LiveServer
    gate: Path
    onednn: str
    small_model: Path

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir


# oneDNN changes how a failed allocation ends (a segfault instead of an exception), so
# the out-of-memory test runs with it on and off; a kill from outside or the time limit
# is the supervisor's alone and runs once, with it off.
@pytest.fixture(scope="module", params=["on", "off"], ids=["onednn-on", "onednn-off"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, keras: Any):
    root = tmp_path_factory.mktemp(f"faults-onednn-{request.param}")
    small = root / "small.keras"
    model = keras.Sequential(
        [
            keras.Input((3,), name="x"),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    model.save(small)
    gate = root / "gate"
    server = LiveServer(
        root / "data",
        None,
        onednn=request.param,
        test_job_gate_dir=str(gate),
        backend_time_limit_s=str(TIME_LIMIT_S),
        job_memory_limit_bytes=str(MEMORY_LIMIT),
        cpu_job_nice=str(CPU_JOB_NICE),
    )
    server.start()
    try:
        with server.client() as client:
            baseline = client.wait_for_run(client.queue_run(small, ["numpy"], batch=4)["id"])
            assert baseline["status"] == "done", baseline
        yield FaultyServer(server, gate, request.param, small)
    finally:
        server.stop()


def stored_state(client: Client, data_dir: Path) -> dict[str, Any]:
    """Every stored file's hash and every run with its divergence rows, as the API says."""
    files = {
        str(path.relative_to(data_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in STORED_FOLDERS
        for path in (data_dir / folder).rglob("*")
        if path.is_file()
    }
    runs = {
        run["id"]: (client.get(f"/api/runs/{run['id']}").json(), divergence(client, run["id"]))
        for run in client.get("/api/runs").json()["data"]
    }
    return {"files": files, "runs": runs}


def divergence(client: Client, run_id: int) -> tuple[int, Any]:
    """The divergence answer as it stands (an error for a run whose reference failed)."""
    answer = client.get(f"/api/runs/{run_id}/divergence")
    return answer.status_code, answer.json()


@pytest.fixture
def before(served: FaultyServer) -> Iterator[dict[str, Any]]:
    with served.server.client() as client:
        yield stored_state(client, served.data_dir)


def assert_service_unharmed(served: FaultyServer, before: dict[str, Any], run_id: int) -> None:
    """Same server process, answering; earlier results untouched; the next run is done."""
    server = served.server
    assert server.process is not None and server.process.poll() is None
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
        after = stored_state(client, served.data_dir)
        for stored_run, state in before["runs"].items():
            assert after["runs"][stored_run] == state
        assert {path: after["files"][path] for path in before["files"]} == before["files"]
        assert not (served.data_dir / "outputs" / str(run_id) / "keras-cpu.npz").exists()
        following = client.wait_for_run(
            client.queue_run(served.small_model, ["numpy", "keras-cpu"], batch=4)["id"]
        )
        verdicts = {row["verdict"] for row in divergence(client, following["id"])[1]["rows"]}
    assert following["status"] == "done", following
    assert verdicts <= {"identical", "rounding"}, verdicts
    assert {b["status"] for b in following["backend_runs"]} == {"done"}
    keras_cpu = next(b for b in following["backend_runs"] if b["backend"] == "keras-cpu")
    assert keras_cpu["environment"]["onednn"] is (served.onednn == "on")


def priority(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def backend_outcome(run: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {b["backend"]: (b["status"], b["reason"]) for b in run["backend_runs"]}


def run_with_held_keras(served: FaultyServer, client: Client) -> tuple[int, int]:
    """A run whose keras-cpu job is mid-run and held there: (run id, job process pid)."""
    hold(served.gate, "keras-cpu")
    run_id = client.queue_run(served.small_model, ["numpy", "keras-cpu"], batch=4)["id"]
    pid = wait_until_held(served.gate, run_id, "keras-cpu")
    # As if the job had stored its outputs file and died before recording it.
    orphan = served.data_dir / "outputs" / str(run_id) / "keras-cpu.npz"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"half a job")
    assert served.server.process is not None
    assert pid != served.server.process.pid
    assert parent_of(pid) == served.server.process.pid
    # The CPU's job processes give way to the browser's (DRIFTBENCH_CPU_JOB_NICE).
    assert priority(pid) == min(priority(served.server.pid) + CPU_JOB_NICE, 19)
    return run_id, pid


@pytest.mark.parametrize("served", ["off"], ids=["onednn-off"], indirect=True)
@pytest.mark.parametrize(
    "signal_number", [signal.SIGSEGV, signal.SIGKILL], ids=["SIGSEGV", "SIGKILL"]
)
def test_job_process_killed_mid_job_fails_that_backend_only(
    served: FaultyServer, before: dict[str, Any], signal_number: signal.Signals
) -> None:
    with served.server.client() as client:
        try:
            run_id, pid = run_with_held_keras(served, client)
            os.kill(pid, signal_number)
        finally:
            release(served.gate, "keras-cpu")
        run = client.wait_for_run(run_id)
        compared = {row["backend"] for row in divergence(client, run_id)[1]["rows"]}
    expected = (
        f"crashed: keras-cpu job process killed by {signal_number.name} (signal {signal_number:d})"
    )
    if signal_number == signal.SIGKILL:
        expected += ", sent by the kernel's out-of-memory killer or by a person"
    assert run["status"] == "done", run
    assert backend_outcome(run) == {
        "numpy-f64": ("done", None),
        "numpy": ("done", None),
        "keras-cpu": ("failed", expected),
    }
    assert compared == {"numpy"}
    assert_service_unharmed(served, before, run_id)


@pytest.mark.parametrize("served", ["off"], ids=["onednn-off"], indirect=True)
def test_job_over_its_time_limit_is_stopped(served: FaultyServer, before: dict[str, Any]) -> None:
    with served.server.client() as client:
        try:
            run_id, _ = run_with_held_keras(served, client)
            run = client.wait_for_run(run_id)
        finally:
            release(served.gate, "keras-cpu")
    assert backend_outcome(run)["keras-cpu"] == (
        "failed",
        f"timed out: the keras-cpu job ran longer than DRIFTBENCH_BACKEND_TIME_LIMIT_S "
        f"({TIME_LIMIT_S} s) and its process was stopped",
    )
    assert backend_outcome(run)["numpy"] == ("done", None)
    assert_service_unharmed(served, before, run_id)


def test_out_of_memory_job_fails_with_the_reason(
    served: FaultyServer, before: dict[str, Any], keras: Any, tmp_path: Path
) -> None:
    """Dense(1e6) on a batch of 4096 needs 16 GB in float32 (30.5 GiB in float64)."""
    wide = tmp_path / "wide.keras"
    keras.Sequential([keras.Input((1,), name="x"), keras.layers.Dense(1_000_000)]).save(wide)
    with served.server.client() as client:
        run = client.wait_for_run(client.queue_run(wide, ["numpy", "keras-cpu"], batch=4096)["id"])
    outcome = backend_outcome(run)
    assert {status for status, _ in outcome.values()} == {"failed"}
    assert all(reason.startswith("out of memory: ") for _, reason in outcome.values()), outcome
    assert all("\n" not in reason for _, reason in outcome.values())
    assert outcome["keras-cpu"][1].startswith(
        "out of memory: the keras-cpu job process exceeded "
        f"DRIFTBENCH_JOB_MEMORY_LIMIT_BYTES ({MEMORY_LIMIT}) with "
    )
    assert_service_unharmed(served, before, run["id"])


def test_killed_browser_job_process_leaves_no_chromium_behind(example: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = LiveServer(tmp_path / "data", None, test_job_gate_dir=str(gate))
    server.start()
    model = example("regression").path
    try:
        with server.client() as client:
            warm = client.wait_for_run(client.queue_run(model, ["tfjs-cpu"], batch=4)["id"])
            assert warm["status"] == "done", warm
            hold(gate, "tfjs-cpu")
            run_id = client.queue_run(model, ["tfjs-cpu"], batch=4)["id"]
            pid = wait_until_held(gate, run_id, "tfjs-cpu")
            browser = chromium_processes(pid)
            assert browser, "the warm browser job process should hold a Chromium"
            # The browser's job processes run at the server's priority (Chromium sets
            # its own processes' priorities from there).
            assert priority(pid) == priority(server.pid)
            os.kill(pid, signal.SIGKILL)
            release(gate, "tfjs-cpu")
            run = client.wait_for_run(run_id)
            wait_for(
                lambda: not any(is_running(chromium) for chromium in browser),
                timeout_s=30,
                what=f"the killed job process's Chromium {browser} to exit",
            )
            following = client.wait_for_run(client.queue_run(model, ["tfjs-cpu"], batch=4)["id"])
    finally:
        release(gate, "tfjs-cpu")
        server.stop()
    assert backend_outcome(run)["tfjs-cpu"] == (
        "failed",
        "crashed: tfjs-cpu job process killed by SIGKILL (signal 9), "
        "sent by the kernel's out-of-memory killer or by a person",
    )
    assert following["status"] == "done"
    assert backend_outcome(following)["tfjs-cpu"] == ("done", None)
