"""Timing in turn: both calls warmed up alike, in turn, before either is timed, so a
call whose code is still being optimised (a page's JavaScript and wasm) is not timed
against one that is not."""

from __future__ import annotations

from app.bench.figures import interleaved


def test_warm_up_calls_alternate_and_are_not_timed() -> None:
    calls: list[str] = []
    measured, baseline = interleaved(
        lambda: calls.append("job"), lambda: calls.append("floor"), repeats=2, warmup=3
    )
    assert calls == ["job", "floor"] * 5
    assert len(measured) == len(baseline) == 2
