"""Holding a backend's jobs mid-run (DRIFTBENCH_TEST_JOB_GATE_DIR), to crash them for sure."""

from __future__ import annotations

from pathlib import Path

from tests.polling import wait_for
from workers.job_gate import hold_path, started_path
from workers.process_tree import is_running


def hold(gate_dir: Path, backend: str) -> None:
    gate_dir.mkdir(parents=True, exist_ok=True)
    hold_path(gate_dir, backend).touch()


def release(gate_dir: Path, backend: str) -> None:
    hold_path(gate_dir, backend).unlink(missing_ok=True)


def wait_until_held(gate_dir: Path, run_id: int, backend: str, timeout_s: float = 180) -> int:
    """The pid of the job process holding `backend` of `run_id`, once it is mid-run."""
    started = started_path(gate_dir, run_id, backend)
    wait_for(started.exists, timeout_s, f"{backend} of run {run_id} to be held mid-run")
    return int(started.read_text())


def wait_until_gone(pid: int, timeout_s: float = 30) -> None:
    """A job process outlives a killed supervisor by up to a second (it polls its parent);
    released before it is gone, it would go on with its job."""
    wait_for(
        lambda: not is_running(pid),
        timeout_s,
        f"job process {pid} to exit after its supervisor was killed",
    )
