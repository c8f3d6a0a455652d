"""Waiting for the machine to be idle before a benchmark part, so that what an earlier
part left running (its server's job processes and Chromium still exiting, PostgreSQL
vacuuming the rows a query part stored) cannot be measured as the next part's cost.
One `make bench` with oneDNN off read the no-bug diagnosis figure at 2.64x where it
measured 1.93-1.95x alone; the next, waiting, found the machine idle within a window
before every part but one (1.0 s) and read 1.94x."""

from __future__ import annotations

import time

# The machine counts as idle once this share of its CPU time, or less, is busy over
# one window.
IDLE_BELOW = 0.1
WINDOW_S = 0.5
# The longest wait before a part (`driftbench bench --idle-wait-s`).
IDLE_WAIT_S = 15.0


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU since boot, from /proc/stat's first line."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_share(window_s: float = WINDOW_S) -> float:
    """The share of all CPUs' time spent busy over the next `window_s` seconds."""
    busy_before, total_before = _cpu_times()
    time.sleep(window_s)
    busy_after, total_after = _cpu_times()
    elapsed = total_after - total_before
    return (busy_after - busy_before) / elapsed if elapsed else 0.0


def wait_until_idle(timeout_s: float = IDLE_WAIT_S) -> float:
    """Seconds waited until the machine was idle for one window, or about `timeout_s`:
    a machine never idle (a busy neighbour on the host) is measured as it is, and the
    report says how long each part waited; twelve parts wait 3 minutes at most. With
    `timeout_s` 0, none at all (the suite's own test of the bench, beside another test)."""
    if timeout_s <= 0:
        return 0.0
    started = time.perf_counter()
    while busy_share() > IDLE_BELOW and time.perf_counter() - started < timeout_s:
        pass
    return time.perf_counter() - started
