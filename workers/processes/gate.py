"""A test-only gate that holds a backend's jobs mid-run while a test wants them held.

Killing a job "while it runs" after polling for `running` races with short jobs,
which may already have finished. With DRIFTBENCH_TEST_JOB_GATE_DIR set and a file
`hold-<backend>` in it, a job of that backend that has been recorded as running
writes its process id to `run-<id>-<backend>.started` and waits while the hold
file exists: a test then knows the job is mid-run and which process runs it.
Unset (always, outside tests), it costs nothing.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

POLL_S = 0.05


def _safe(backend: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", backend)


def hold_path(gate_dir: Path, backend: str) -> Path:
    return gate_dir / f"hold-{_safe(backend)}"


def started_path(gate_dir: Path, run_id: int, backend: str) -> Path:
    return gate_dir / f"run-{run_id}-{_safe(backend)}.started"


def hold_job(gate_dir: Path | None, run_id: int, backend: str) -> None:
    if gate_dir is None or not hold_path(gate_dir, backend).exists():
        return
    started = started_path(gate_dir, run_id, backend)
    staged = started.with_suffix(".staged")
    staged.write_text(str(os.getpid()))
    staged.replace(started)
    while hold_path(gate_dir, backend).exists():
        time.sleep(POLL_S)
