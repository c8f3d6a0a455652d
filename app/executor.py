"""Where runs execute: the embedded pool (default) and the start-up recovery of stopped runs.

`DRIFTBENCH_EXECUTOR=local` works on runs from threads of the server process and
runs every job in a warm job process the server supervises (workers/processes/):
a crash or an out-of-memory kill fails one backend, never the server, and the
browser and TensorFlow stay warm between jobs. `DRIFTBENCH_EXECUTOR=celery` sends
them to `driftbench worker` processes through the broker. Runs that were queued or running
when the server stopped are re-run on the next start, or marked failed once they
have used up `DRIFTBENCH_JOB_ATTEMPTS`, so none stays "running" forever.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from app.core.config import settings
from app.core.run_ends import RunEnds
from app.data.runs import recover_interrupted_runs
from workers.jobs import compare_on_request, execute_run, job_processes
from workers.processes.supervisor import JobProcesses

log = logging.getLogger(__name__)


class Executor(Protocol):
    # The requests waiting for a run to end; an executor that ends runs in this process
    # says so there.
    ends: RunEnds

    def submit(self, run_id: int) -> None: ...

    def compare(self, run_id: int, against: str) -> None:
        """Compare a finished run against another of its backends; returns when stored."""

    def shutdown(self) -> None: ...


class LocalExecutor:
    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="driftbench-run")
        self._processes = job_processes()
        # Every run ends here and says so: the re-read only guards a missed word.
        self.ends = RunEnds(recheck_s=2.0)

    def submit(self, run_id: int) -> None:
        self._pool.submit(self._execute, run_id)

    def _execute(self, run_id: int) -> None:
        try:
            execute_run(run_id, self._processes)
        finally:
            self.ends.ended(run_id)

    def compare(self, run_id: int, against: str) -> None:
        compare_on_request(self._processes, run_id, against)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._processes.close()


def resume_interrupted_runs(executor: Executor) -> list[int]:
    """Submit again the runs a stopped server left unfinished (those with attempts left;
    the others are marked failed); returns the re-queued ids."""
    requeued = recover_interrupted_runs(max_attempts=settings.job_attempts)
    for run_id in requeued:
        log.info("re-queueing run %s interrupted by a server stop", run_id)
        executor.submit(run_id)
    return requeued


class CeleryExecutor:
    """Sends runs to Celery workers; the broker, not the API, re-delivers lost jobs. A
    comparison asked for later is answered at once, so it runs in a job process of the
    API's own (started on the first request), like the embedded executor's."""

    def __init__(self) -> None:
        self._processes: JobProcesses | None = None
        self.ends = RunEnds(recheck_s=0.25)  # never told: the workers end the runs

    def submit(self, run_id: int) -> None:
        from workers.tasks import start_task

        start_task.delay(run_id)

    def compare(self, run_id: int, against: str) -> None:
        if self._processes is None:
            self._processes = job_processes()
        compare_on_request(self._processes, run_id, against)

    def shutdown(self) -> None:
        """The runs' jobs live in the broker and the workers; only comparisons are here."""
        if self._processes is not None:
            self._processes.close()


def make_executor() -> Executor:
    if settings.executor == "celery":
        return CeleryExecutor()
    return LocalExecutor(settings.local_workers)
