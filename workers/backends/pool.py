"""A process's warm runners: each backend's runner activated once, on its first job, and
deactivated when the process stops.

This is where warm state lives (TensorFlow imported and models traced, one
Chromium with its pages, a keras-gpu child): in runner instances, held here,
instead of module globals. What several runners share (the four TF.js backends'
one browser) is created once per pool in its `SharedResources`.
"""

from __future__ import annotations

import contextlib
import threading
from types import TracebackType

from workers.backends.base import Runner, SharedResources
from workers.backends.registry import runner_class
from workers.engine.options import DEFAULT_OPTIONS, EngineOptions


class RunnerPool:
    def __init__(self, options: EngineOptions = DEFAULT_OPTIONS) -> None:
        self.options = options
        self.shared = SharedResources()
        self._runners: dict[str, Runner] = {}
        self._lock = threading.Lock()

    def runner(self, backend: str) -> Runner:
        """The backend's active runner; a runner that fails to activate is not kept, so
        the next job tries again (a browser that failed to start once may start now)."""
        with self._lock:
            runner = self._runners.get(backend)
            if runner is None:
                runner = runner_class(backend)(self.options, self.shared)
                runner.activate()
                self._runners[backend] = runner
            return runner

    def close(self) -> None:
        """Deactivate every runner, newest first, then what they shared; one that fails to
        deactivate does not keep the others (or a browser) alive: the first error is
        raised once all are closed."""
        with self._lock:
            runners, self._runners = list(self._runners.values()), {}
        with contextlib.ExitStack() as closing:
            closing.callback(self.shared.close)
            for runner in runners:
                closing.callback(runner.deactivate)

    def __enter__(self) -> RunnerPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
