"""Requests waiting for a run's end are woken by the executor's word from another thread,
only for their own run, and leave nothing behind."""

from __future__ import annotations

import asyncio
import threading

from app.api.runs import MAX_WAIT_S
from app.core.run_ends import RunEnds
from driftbench import client


def test_word_from_another_thread_wakes_the_waiters_of_that_run_only() -> None:
    ends = RunEnds(recheck_s=60)

    async def wait_for_word() -> tuple[bool, bool]:
        with ends.watching(7) as seven, ends.watching(8) as eight:
            threading.Thread(target=ends.ended, args=(7,)).start()
            await asyncio.wait_for(seven.wait(), timeout=30)
            await asyncio.sleep(0.05)
            return seven.is_set(), eight.is_set()

    assert asyncio.run(wait_for_word()) == (True, False)
    assert ends._waiting == {}


def test_word_before_anyone_waits_is_not_kept_for_later_waiters() -> None:
    """A request learns of an end before its watch from its own read of the run (taken
    after the watch starts); the word is not kept, so it never wakes a wait by itself."""
    ends = RunEnds(recheck_s=60)
    ends.ended(3)

    async def watch() -> bool:
        with ends.watching(3) as three:
            await asyncio.sleep(0.05)
            return three.is_set()

    assert asyncio.run(watch()) is False
    assert ends._waiting == {}


def test_the_client_asks_for_no_longer_a_wait_than_the_server_takes() -> None:
    assert client.MAX_WAIT_S == MAX_WAIT_S
