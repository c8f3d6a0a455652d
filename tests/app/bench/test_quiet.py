"""The bench waits for an idle machine before each part: with every core spinning it
must see the machine busy and wait until its limit, not measure on top of them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from app.bench.quiet import busy_share, wait_until_idle

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"


def _cpus_counted() -> int:
    """The CPUs /proc/stat counts (the machine's, where a container's affinity may be
    fewer): every one must spin for the machine to read busy."""
    with open("/proc/stat") as stat:
        return sum(1 for line in stat if line.startswith("cpu") and line[3].isdigit())


@contextmanager
def every_core_spinning(seconds: float) -> Iterator[None]:
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)])
        for _ in range(_cpus_counted())
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_a_machine_whose_cores_all_spin_is_busy_and_waited_for() -> None:
    with every_core_spinning(seconds=10):
        assert busy_share() > 0.6
        waited = wait_until_idle(timeout_s=1.0)
        assert wait_until_idle(timeout_s=0) == 0.0  # not waited for at all
    assert 1.0 <= waited < 3.0
