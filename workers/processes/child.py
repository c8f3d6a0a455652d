"""The main of a job process: warm up once, then run the jobs its supervisor sends.

Everything a job keeps warm (TensorFlow imported, loaded Keras models with their
traced predict, the Chromium pages, exported models) lives here, so it survives
from job to job; a native crash or an out-of-memory kill ends only this process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from workers.engine.errors import failure_reason
from workers.processes.lifetime import die_with_parent


def offer_to_the_oom_killer() -> None:
    """When the machine runs out of memory, the kernel should kill a job, not the server.

    Raising one's own oom_score_adj needs no privilege; the server keeps its own score.
    """
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("1000")


def one_blas_thread() -> None:
    """numpy's BLAS on one thread, unless OPENBLAS_NUM_THREADS says otherwise: OpenBLAS
    keeps a thread per core spinning after every matrix product, where the lanes' job
    processes already share the cores (on 2 cores, 150 of the cpu job process's 320
    core-ms a dense10x50 run; the numpy port on cifar_cnn at batch 64 took 60 ms and
    124 core-ms on two threads, 71 ms and 73 on one)."""
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        threadpool_limits(1, user_api="blas")


# glibc's mallopt parameters, and the values a job process sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_FROM_BYTES = 4 * 2**20
TRIM_FROM_BYTES = 64 * 2**20


def keep_freed_memory() -> None:
    """Blocks under 4 MB from the heap, and freed heap kept up to 64 MB: glibc maps a
    block of 128 KB or more afresh for every allocation of the size last freed, so each
    of a comparison's temporaries (a 256x50x10 layer stack in float64 is 1 MB) faulted
    its pages in again: ten such layers compared in 3.2 ms, 2.3 ms with this. Bigger
    blocks (a big model's layers) are still mapped and handed back when freed."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc: its allocator's own habits stand
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_FROM_BYTES)
    mallopt(M_TRIM_THRESHOLD, TRIM_FROM_BYTES)


@dataclass(frozen=True)
class JobWorker:
    """What a job process runs: `warm_up(capability)` once, `perform(job)` for each job,
    `shut_down()` when its supervisor stops it. Module-level functions, so a spawned
    child imports them by name; this package knows nothing of what a job is
    (workers/jobs.py does)."""

    perform: Callable[[Any], Any]
    warm_up: Callable[[str], None]
    shut_down: Callable[[], None]


def serve(connection: Connection, capability: str, worker: JobWorker, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    # Ctrl-C or a service manager's SIGTERM reaches the whole process group: the
    # supervisor stops its jobs itself, leaving unfinished ones to be run again.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    offer_to_the_oom_killer()
    one_blas_thread()
    keep_freed_memory()
    worker.warm_up(capability)

    connection.send({"ready": os.getpid()})
    try:
        while (job := connection.recv()) is not None:
            started = time.perf_counter()
            try:
                answer = {"result": worker.perform(job), "seconds": time.perf_counter() - started}
            except Exception as error:  # reported to the supervisor, which fails only this job
                answer = {"error": failure_reason(error)}
            connection.send(answer)
    finally:
        worker.shut_down()
