"""Requests that wait for a run to end (`GET /api/runs/{id}?wait_s=`), woken as it ends.

The embedded executor says when it has ended a run, so a waiting request answers at
once; a run ended elsewhere (by a Celery worker) is seen when the request reads the
run again, every `recheck_s`. Waiters are asyncio events of the request's loop, set
from the executor's threads through that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class RunEnds:
    def __init__(self, recheck_s: float) -> None:
        """`recheck_s`: how often a waiting request reads its run again, the most a run
        ended without word here is seen late."""
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._waiting: dict[int, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    @contextlib.contextmanager
    def watching(self, run_id: int) -> Iterator[asyncio.Event]:
        """An event set when the run is said to have ended. Take it before reading the run:
        an end between the read and the wait then still sets it."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiting.setdefault(run_id, []).append(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                waiting = self._waiting[run_id]
                waiting.remove(entry)
                if not waiting:
                    del self._waiting[run_id]

    def ended(self, run_id: int) -> None:
        """Wake the requests waiting on the run; callable from any thread."""
        with self._lock:
            waiting = list(self._waiting.get(run_id, ()))
        for loop, event in waiting:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the server stops
                loop.call_soon_threadsafe(event.set)
