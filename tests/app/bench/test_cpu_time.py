"""The end-to-end figure's CPU time by role comes from /proc: under a root process that
waits, a child that spins must be counted, under its role, for about the time it spun."""

from __future__ import annotations

import subprocess
import sys

from app.bench.end_to_end import cpu_seconds_by_role

# Spins for 0.6 s of CPU time, says so, and stays until told to go.
SPIN = (
    "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
    "print('spun', flush=True)\ninput()"
)
# The root, standing for the server: starts the spinner on its own pipes and waits.
ROOT = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', sys.argv[1]])"


def test_a_spinning_child_is_counted_under_its_role() -> None:
    root = subprocess.Popen(
        [sys.executable, "-c", ROOT, SPIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert root.stdout is not None and root.stdout.readline() == "spun\n"
        seconds = cpu_seconds_by_role(root.pid)
        named = cpu_seconds_by_role(root.pid, "bench process")
    finally:
        root.communicate("\n", timeout=10)
    assert 0.6 <= seconds["job processes"] < 1.0
    assert seconds["server"] < 0.6  # the root only started it
    assert set(named) == {"bench process", "job processes"}
