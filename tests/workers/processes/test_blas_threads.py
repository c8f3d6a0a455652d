"""A job process runs numpy's BLAS on one thread unless OPENBLAS_NUM_THREADS says
otherwise: OpenBLAS's extra threads spin on after every matrix product, taking a core
from the other lane's jobs while the job process itself waits."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from workers.processes.child import JobWorker
from workers.processes.supervisor import JobLimits, JobProcesses

IDLE_S = 0.3


def multiply_then_idle(_: object) -> tuple[list[int], float]:
    """Matrix products, then a wait: the process's BLAS threads and the CPU seconds it
    burnt while it waited."""
    a = np.random.default_rng(0).standard_normal((512, 512))
    for _ in range(5):
        a = a @ a.T / 512
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(IDLE_S)
    after = resource.getrusage(resource.RUSAGE_SELF)
    burnt = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    threads = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return threads, burnt


def nothing(_: object = None) -> None:
    """No warm-up, nothing to shut down."""


@pytest.fixture
def processes() -> Iterator[JobProcesses]:
    supervised = JobProcesses(JobLimits(2**31, 60), JobWorker(multiply_then_idle, nothing, nothing))
    yield supervised
    supervised.close()


def test_a_job_process_burns_no_cpu_while_it_waits_after_matrix_products(
    processes: JobProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    threads, burnt = processes.run("test", "multiply", "blas").result
    assert threads == [1]
    assert burnt < 0.1 * IDLE_S, f"{burnt * 1000:.0f} ms of CPU while the job waited"


def test_a_blas_thread_count_set_in_the_environment_stands(
    processes: JobProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    threads, _ = processes.run("test", "multiply", "blas").result
    assert threads == [2]
