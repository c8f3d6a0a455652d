"""The memory limit counts a page a job's processes share once, as Chromium's processes
share theirs, and still stops a job that holds more than the limit on its own."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pytest

from workers.processes.child import JobWorker
from workers.processes.supervisor import JobLimits, JobProcessDied, JobProcesses

MiB = 1024**2
LIMIT = 800 * MiB
HELD_S = 3.0  # the supervisor sees a job's new children within a second


def hold_pages(job: tuple[int, int]) -> int:
    """`size` bytes written once, held for HELD_S by this process and by `children`
    forked from it, which only read them (their pages stay shared); how many there were."""
    size, children = job
    block = np.ones(size, np.uint8)
    forked = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            time.sleep(HELD_S)
            os._exit(0 if block[-1] == 1 else 1)
        forked.append(pid)
    time.sleep(HELD_S)
    return sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in forked) + 1


def nothing(_: object = None) -> None:
    """No warm-up, nothing to shut down."""


@pytest.fixture
def processes() -> Iterator[JobProcesses]:
    supervised = JobProcesses(JobLimits(LIMIT, 60), JobWorker(hold_pages, nothing, nothing))
    yield supervised
    supervised.close()


def test_pages_shared_by_a_jobs_processes_count_once(processes: JobProcesses) -> None:
    """Four processes holding the same 300 MiB: 1.2 GiB resident summed, 0.3 counted."""
    answer = processes.run("test", (300 * MiB, 3), "shared")
    assert answer.result == 4


def test_a_job_over_the_limit_on_its_own_is_stopped(processes: JobProcesses) -> None:
    with pytest.raises(JobProcessDied, match=r"out of memory: the alone job process exceeded"):
        processes.run("test", (900 * MiB, 0), "alone")
