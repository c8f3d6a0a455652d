"""The bench waits for an idle machine before each part: with every core spinning it
must see the machine busy and wait until its limit, not measure on top of them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from app.bench.quiet import busy_share, wait_until_idle

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"


@contextmanager
def every_core_spinning(seconds: float) -> Iterator[None]:
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)])
        for _ in range(len(os.sched_getaffinity(0)))
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
    assert 1.0 <= waited < 3.0
