"""The end-to-end figure's CPU time by role comes from /proc: under a root process that
waits, a child that spins must be counted, under its role, for about the time it spun;
timed in turn with the service, the floors' CPU time must leave the server's out."""

from __future__ import annotations

import subprocess
import sys
import time

from app.bench.end_to_end import BLOCK, cpu_seconds_by_role, in_turn
from workers.processes.tree import descendants

# Spins for 0.6 s of CPU time, says so, and stays until told to go.
SPIN = (
    "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
    "print('spun', flush=True)\ninput()"
)
# The root, standing for the server: starts the spinner on its own pipes and waits.
ROOT = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', sys.argv[1]])"
# A server whose every run spins 0.2 s of CPU time, answering once it has, with a child
# that spins all the time: busy while the floors are timed too.
SERVER = (
    "import subprocess, sys, time\n"
    "busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    end = time.process_time() + 0.2\n    while time.process_time() < end: pass\n"
    "    print('ran', flush=True)\n"
    "busy.kill()"
)


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_spinning_child_is_counted_under_its_role() -> None:
    root = subprocess.Popen(
        [sys.executable, "-c", ROOT, SPIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert root.stdout is not None and root.stdout.readline() == "spun\n"
        seconds = cpu_seconds_by_role(root.pid)
        named = cpu_seconds_by_role(root.pid, "bench process")
        without = cpu_seconds_by_role(root.pid, excluding=set(descendants(root.pid)))
    finally:
        root.communicate("\n", timeout=10)
    assert 0.6 <= seconds["job processes"] < 1.0
    assert seconds["server"] < 0.6  # the root only started it
    assert set(named) == {"bench process", "job processes"}
    assert set(without) == {"server"}


def test_floors_and_runs_alternate_in_blocks_each_with_its_own_cpu_time() -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert server.stdin is not None and server.stdout is not None
    assert server.stdout.readline() == "ready\n"
    calls: list[str] = []

    def floor() -> None:
        calls.append("floor")
        _spin(0.1)

    def run() -> None:
        calls.append("run")
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write("run\n")
        server.stdin.flush()
        assert server.stdout.readline() == "ran\n"

    try:
        measured = in_turn({"spinner": floor}, run, BLOCK + 2, server.pid)
    finally:
        server.communicate("", timeout=10)
    assert calls == ["floor"] * BLOCK + ["run"] * BLOCK + ["floor"] * 2 + ["run"] * 2
    assert len(measured.floor_s["spinner"]) == len(measured.run_s) == BLOCK + 2
    # Per call: the server's spinning is the run's, never the floors' (it is under this
    # process, and its child spins while the floors are timed).
    assert measured.run_core_s["server"] >= 0.18
    assert 0.09 <= measured.floors_core_s["bench process"] < 0.3
    others = sum(s for role, s in measured.floors_core_s.items() if role != "bench process")
    assert others < 0.02, measured.floors_core_s
