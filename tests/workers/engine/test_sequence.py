"""The one run order every executor follows, checked case by case by hand."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from workers.engine.sequence import COMPARISON, RunOrder, Step, run_in_order

ORDER = RunOrder.of("numpy-f64", ["keras-cpu", "numpy-f64", "tfjs-cpu", "keras-cpu"])


def test_the_reference_once_first_then_the_others_in_the_order_asked() -> None:
    assert ORDER.backends == ("numpy-f64", "keras-cpu", "tfjs-cpu")
    assert ORDER.first() == [Step("numpy-f64")]


def test_a_reference_that_feeds_no_one_starts_with_the_others_and_starts_nothing() -> None:
    """Without the isolated mode nothing waits for the reference: every backend starts at
    once (the reference first), and none is started again when the reference ends."""
    order = RunOrder.of("numpy-f64", ["keras-cpu", "numpy-f64", "tfjs-cpu"], feeds=False)
    assert order.first() == [Step("numpy-f64"), Step("keras-cpu"), Step("tfjs-cpu")]
    running = {"numpy-f64": "done", "keras-cpu": "queued", "tfjs-cpu": "running"}
    assert order.after(Step("numpy-f64"), running) == []
    all_final = {"numpy-f64": "done", "keras-cpu": "done", "tfjs-cpu": "failed"}
    assert order.after(Step("numpy-f64"), all_final) == [COMPARISON]


def test_after_the_reference_the_queued_others_start_together() -> None:
    statuses = {"numpy-f64": "done", "keras-cpu": "queued", "tfjs-cpu": "queued"}
    assert ORDER.after(Step("numpy-f64"), statuses) == [Step("keras-cpu"), Step("tfjs-cpu")]
    # A reference delivered again while the others run starts nothing twice.
    running = {"numpy-f64": "done", "keras-cpu": "running", "tfjs-cpu": "queued"}
    assert ORDER.after(Step("numpy-f64"), running) == [Step("tfjs-cpu")]


def test_the_comparison_waits_for_every_backend_whatever_its_outcome() -> None:
    one_left = {"numpy-f64": "done", "keras-cpu": "failed", "tfjs-cpu": "running"}
    assert ORDER.after(Step("keras-cpu"), one_left) == []
    all_final = {"numpy-f64": "done", "keras-cpu": "failed", "tfjs-cpu": "skipped"}
    assert ORDER.after(Step("tfjs-cpu"), all_final) == [COMPARISON]
    assert ORDER.after(COMPARISON, all_final) == []


def test_a_run_of_the_reference_alone_goes_straight_to_the_comparison() -> None:
    alone = RunOrder.of("numpy-f64", ["numpy-f64"])
    assert alone.after(Step("numpy-f64"), {"numpy-f64": "unsupported"}) == [COMPARISON]


def test_run_in_order_walks_every_step_once_in_order() -> None:
    statuses = dict.fromkeys(ORDER.backends, "queued")
    walked: list[Step] = []

    def run_step(step: Step) -> None:
        walked.append(step)
        if step.backend is not None:
            statuses[step.backend] = "done"

    run_in_order(ORDER, run_step, lambda: statuses)
    assert walked == [Step("numpy-f64"), Step("keras-cpu"), Step("tfjs-cpu"), COMPARISON]


def test_lanes_run_at_once_and_each_lane_in_order() -> None:
    """keras-cpu waits at a barrier for tfjs-cpu: run one after the other, it would time
    out. The comparison still comes once, after both."""
    order = RunOrder.of("numpy-f64", ["keras-cpu", "numpy", "tfjs-cpu"])
    statuses = dict.fromkeys(order.backends, "queued")
    meeting = threading.Barrier(2, timeout=10)
    walked: list[tuple[str, Step]] = []

    def run_step(step: Step) -> None:
        if step.backend in ("keras-cpu", "tfjs-cpu"):
            meeting.wait()
        walked.append((threading.current_thread().name, step))
        if step.backend is not None:
            statuses[step.backend] = "done"

    def lane(step: Step) -> str:
        return "browser" if step.backend == "tfjs-cpu" else "cpu"

    run_in_order(order, run_step, lambda: statuses, lane=lane)
    steps = [step for _, step in walked]
    assert len(steps) == 5
    assert steps[0] == Step("numpy-f64") and steps[-1] == COMPARISON
    assert sorted(s.backend or "" for s in steps[1:-1]) == ["keras-cpu", "numpy", "tfjs-cpu"]
    cpu_lane = [s for s in steps if s.backend in ("keras-cpu", "numpy")]
    assert cpu_lane == [Step("keras-cpu"), Step("numpy")]
    threads = {step.backend: name for name, step in walked}
    assert threads["keras-cpu"] == threads["numpy"] != threads["tfjs-cpu"]


def test_without_a_feed_the_browser_lane_does_not_wait_for_the_reference() -> None:
    """tfjs-cpu meets the reference at a barrier: had it waited for the reference to end,
    the barrier would time out."""
    order = RunOrder.of("numpy-f64", ["keras-cpu", "tfjs-cpu"], feeds=False)
    statuses = dict.fromkeys(order.backends, "queued")
    meeting = threading.Barrier(2, timeout=10)
    walked: list[Step] = []

    def run_step(step: Step) -> None:
        if step.backend in ("numpy-f64", "tfjs-cpu"):
            meeting.wait()
        walked.append(step)
        if step.backend is not None:
            statuses[step.backend] = "done"

    def lane(step: Step) -> str:
        return "browser" if step.backend == "tfjs-cpu" else "cpu"

    run_in_order(order, run_step, lambda: statuses, lane=lane)
    assert walked[-1] == COMPARISON and walked.count(COMPARISON) == 1
    assert walked.index(Step("numpy-f64")) < walked.index(Step("keras-cpu"))


def _handing_on(statuses: dict[str, str], walked: list[tuple[str, Step]]) -> Any:
    """A step runner whose browser steps hand their comparison on; each handed-on step
    finishes its backend, as the executor's do."""

    def run_step(step: Step) -> Step | None:
        walked.append((threading.current_thread().name, step))
        if step.backend is None:
            return None
        if step.backend.startswith("tfjs-") and not step.compares_arrival:
            return Step(step.backend, earlier=("numpy-f64",))
        statuses[step.backend] = "done"
        return None

    return run_step


def browser_or_cpu(step: Step) -> str:
    if step.compares_arrival:
        return step.lane or "cpu"
    return "browser" if (step.backend or "").startswith("tfjs-") else "cpu"


def test_a_handed_on_comparison_queues_in_its_lane_and_the_last_step_waits_for_it() -> None:
    """tfjs-cpu hands on while the CPU's lane is held at a barrier by numpy: the browser
    lane goes on to tfjs-wasm, and the CPU's lane runs both comparisons after its own
    steps, in the order handed on; the run's comparison comes last, once."""
    order = RunOrder.of("numpy-f64", ["numpy", "tfjs-cpu", "tfjs-wasm"], feeds=False)
    statuses = dict.fromkeys(order.backends, "queued")
    walked: list[tuple[str, Step]] = []
    handing_on = _handing_on(statuses, walked)
    wasm_ran = threading.Event()

    def run_step(step: Step) -> Step | None:
        if step == Step("numpy"):
            assert wasm_ran.wait(10), "the browser lane waited for a comparison"
        if step == Step("tfjs-wasm"):
            wasm_ran.set()
        return handing_on(step)

    run_in_order(order, run_step, lambda: statuses, lane=browser_or_cpu)
    threads = {step: name for name, step in walked}
    compared = [step for _, step in walked if step.compares_arrival]
    assert compared == [
        Step("tfjs-cpu", earlier=("numpy-f64",)),
        Step("tfjs-wasm", earlier=("numpy-f64",)),
    ]
    assert {threads[step] for step in compared} == {threads[Step("numpy")]}
    cpu_lane = [step for name, step in walked if name == threads[Step("numpy")]]
    assert cpu_lane[:2] == [Step("numpy-f64"), Step("numpy")]
    assert walked[-1][1] == COMPARISON and [s for _, s in walked].count(COMPARISON) == 1
    assert all(status == "done" for status in statuses.values())


def test_a_lane_with_nothing_left_takes_a_portable_comparison_from_another() -> None:
    """The CPU's lane is held by numpy until a comparison has run in the browser's lane:
    that lane, its pages done, takes tfjs-cpu's portable comparison from the CPU's queue
    (marked as run there), while tfjs-wasm's, not portable, waits for the CPU's lane."""
    order = RunOrder.of("numpy-f64", ["numpy", "tfjs-cpu", "tfjs-wasm"], feeds=False)
    statuses = dict.fromkeys(order.backends, "queued")
    walked: list[tuple[str, Step]] = []
    taken = threading.Event()

    def run_step(step: Step) -> Step | None:
        walked.append((threading.current_thread().name, step))
        if step == Step("numpy"):
            assert taken.wait(10), "no lane took the portable comparison"
        if step.compares_arrival and step.lane == "browser":
            taken.set()
        if step.backend is None:
            return None
        if step.backend.startswith("tfjs-") and not step.compares_arrival:
            portable = step.backend == "tfjs-cpu"
            return Step(step.backend, earlier=("numpy-f64",), portable=portable)
        statuses[step.backend] = "done"
        return None

    run_in_order(order, run_step, lambda: statuses, lane=browser_or_cpu)
    threads = {step.backend: name for name, step in walked if not step.compares_arrival}
    compared = {step.backend: (name, step.lane) for name, step in walked if step.compares_arrival}
    assert compared == {
        "tfjs-cpu": (threads["tfjs-wasm"], "browser"),
        "tfjs-wasm": (threads["numpy"], None),
    }
    assert walked[-1][1] == COMPARISON and all(s == "done" for s in statuses.values())


def test_the_last_step_queued_in_a_lane_is_marked_as_ending_it() -> None:
    """Only the browser lane's last page is marked: its job may compare its portable
    comparison itself, where the others hand theirs on to the CPU's lane."""
    order = RunOrder.of("numpy-f64", ["numpy", "tfjs-cpu", "tfjs-wasm", "tfjs-webgl"], feeds=False)
    statuses = dict.fromkeys(order.backends, "queued")
    walked: list[tuple[str, Step]] = []
    run_in_order(order, _handing_on(statuses, walked), lambda: statuses, lane=browser_or_cpu)
    pages = [step for _, step in walked if browser_or_cpu(step) == "browser"]
    assert [(step.backend, step.lane_ends) for step in pages] == [
        ("tfjs-cpu", False),
        ("tfjs-wasm", False),
        ("tfjs-webgl", True),
    ]


def test_without_its_lane_in_the_wave_a_handed_on_step_runs_next_where_it_was_handed() -> None:
    """In the isolated mode the reference runs alone first; a wave of TF.js backends
    alone has no CPU lane, so each comparison runs in the browser's lane, marked so,
    before the next backend. Without lanes (the CLI), it runs next too."""
    order = RunOrder.of("numpy-f64", ["tfjs-cpu", "tfjs-wasm"])
    for lane in (browser_or_cpu, None):
        statuses = dict.fromkeys(order.backends, "queued")
        walked: list[tuple[str, Step]] = []
        run_in_order(order, _handing_on(statuses, walked), statuses.copy, lane=lane)
        marked = "browser" if lane else None
        assert [step for _, step in walked] == [
            Step("numpy-f64"),
            Step("tfjs-cpu"),
            Step("tfjs-cpu", earlier=("numpy-f64",), lane=marked),
            Step("tfjs-wasm"),
            Step("tfjs-wasm", earlier=("numpy-f64",), lane=marked),
            COMPARISON,
        ]


def test_a_failing_step_ends_the_wave_and_is_raised() -> None:
    order = RunOrder.of("numpy-f64", ["numpy", "tfjs-cpu"], feeds=False)
    statuses = dict.fromkeys(order.backends, "queued")

    def run_step(step: Step) -> Step | None:
        if step == Step("tfjs-cpu"):
            raise RuntimeError("the browser went away")
        statuses[step.backend or ""] = "done"
        return None

    with pytest.raises(RuntimeError, match="the browser went away"):
        run_in_order(order, run_step, lambda: statuses, lane=browser_or_cpu)
