"""Waiting in tests for a condition instead of for a fixed time.

A fixed `time.sleep(N)` before an assertion is too short on a loaded machine (a
flaky failure) and too long on an idle one (a slow suite); polling the condition
itself in small steps is neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """Call `condition` every `interval_s` until it returns something truthy, and return
    that; after `timeout_s`, fail naming `what` was awaited. An exception raised by
    `condition` ends the wait at once (e.g. the process it waits on has exited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)
