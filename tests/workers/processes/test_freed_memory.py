"""A job process keeps the memory it freed for its next temporaries: a comparison's
arrays of a megabyte or so, several at once, allocated and freed over and over, would
otherwise be handed back to the system and fault every page in again."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from workers.processes.child import JobWorker
from workers.processes.supervisor import JobLimits, JobProcesses

BLOCK_BYTES = 2**20
BLOCKS = 6  # live at once, as a comparison's stacks, conversions and errors are
ROUNDS = 20
PAGES_A_ROUND = BLOCKS * BLOCK_BYTES // resource.getpagesize()


def page_faults_of_fresh_blocks(rounds: int) -> int:
    """Minor page faults while BLOCKS arrays of 1 MB are allocated, written and freed
    `rounds` times, after one round that may fault in what the heap lacks."""
    [np.ones(BLOCK_BYTES // 8) for _ in range(BLOCKS)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        [np.ones(BLOCK_BYTES // 8) for _ in range(BLOCKS)]
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def nothing(_: object = None) -> None:
    """No warm-up, nothing to shut down."""


@pytest.fixture
def processes() -> Iterator[JobProcesses]:
    supervised = JobProcesses(
        JobLimits(2**31, 60), JobWorker(page_faults_of_fresh_blocks, nothing, nothing)
    )
    yield supervised
    supervised.close()


def test_a_job_process_reuses_freed_blocks_without_faulting_their_pages_in(
    processes: JobProcesses,
) -> None:
    # A fresh Python, as glibc leaves it: every round faults the blocks in again.
    plain = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tests.workers.processes.test_freed_memory import page_faults_of_fresh_blocks"
            f" as f; print(f({ROUNDS}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(plain.stdout) >= ROUNDS * PAGES_A_ROUND // 2
    faults = processes.run("test", ROUNDS, "freed memory").result
    assert faults < PAGES_A_ROUND, f"{faults} page faults over {ROUNDS} rounds"
