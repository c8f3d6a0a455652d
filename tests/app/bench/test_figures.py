"""Timing in turn: both calls warmed up alike, in turn, before either is timed, so a
call whose code is still being optimised (a page's JavaScript and wasm) is not timed
against one that is not."""

from __future__ import annotations

import time

from app.bench.figures import interleaved


def test_warm_up_calls_alternate_and_are_not_timed() -> None:
    calls: list[str] = []
    measured, baseline = interleaved(
        lambda: calls.append("job"), lambda: calls.append("floor"), repeats=2, warmup=3
    )
    assert calls == ["job", "floor"] * 5
    assert len(measured) == len(baseline) == 2


def test_warm_up_ends_once_it_has_taken_its_seconds() -> None:
    """A slow call is warmed up fewer times (at least once each); the timed calls are
    all made."""
    calls: list[str] = []

    def slow() -> None:
        calls.append("job")
        time.sleep(0.02)

    measured, baseline = interleaved(
        slow, lambda: calls.append("floor"), repeats=2, warmup=6, warmup_s=0.03
    )
    assert calls == ["job", "floor"] * 4
    assert len(measured) == len(baseline) == 2
