"""The order of a run's steps, in one place for the CLI, the embedded executor and Celery.

In the isolated mode the reference runs first: it feeds every other backend the
reference's input to each layer. Otherwise every backend starts at once, the
reference first in its lane. The other backends do not depend on each other (Celery
runs them at once; the embedded executor runs each capability's at once with the
others'). Each backend's job compares it with the reference, and the reference each
backend stored before it, as it arrives (workers/jobs.py); the comparison step comes
last, once every backend has finished, and compares what is left. Each executor asks
`RunOrder.after` what may start when a step has finished, and runs those steps its own
way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from workers.engine.status import BackendStatus


@dataclass(frozen=True)
class Step:
    """One backend of a run, or (`backend` None) the comparison of all of them."""

    backend: str | None = None

    @property
    def is_comparison(self) -> bool:
        return self.backend is None


COMPARISON = Step()


@dataclass(frozen=True)
class RunOrder:
    reference: str
    others: tuple[str, ...]
    # The reference's outputs feed the others (the isolated mode): it runs before them.
    feeds: bool = True

    @classmethod
    def of(cls, reference: str, backends: Iterable[str], *, feeds: bool = True) -> RunOrder:
        """The reference and every other backend once, in the order asked for."""
        others = tuple(b for b in dict.fromkeys(backends) if b != reference)
        return cls(reference, others, feeds)

    @property
    def backends(self) -> tuple[str, ...]:
        return (self.reference, *self.others)

    def first(self) -> list[Step]:
        """The reference alone when it feeds the others; otherwise every backend, the
        reference first: a small model's browser jobs no longer wait for it (a tenth of
        a dense10x50 run)."""
        return [Step(b) for b in ([self.reference] if self.feeds else self.backends)]

    def after(self, finished: Step, statuses: Mapping[str, str]) -> list[Step]:
        """What may start now that `finished` has: the other backends still queued once
        the reference that feeds them is done, and the comparison once every backend has
        finished. Two backends finishing together may both be told to compare: executors
        that run steps at once claim the comparison (`claim_comparison` in
        app/data/runs.py)."""
        if finished.is_comparison:
            return []
        if self.feeds and finished.backend == self.reference:
            waiting = [Step(b) for b in self.others if statuses.get(b) == BackendStatus.QUEUED]
            if waiting:
                return waiting
        if all(BackendStatus(statuses[b]).is_final for b in self.backends):
            return [COMPARISON]
        return []


def run_in_order(
    order: RunOrder,
    run_step: Callable[[Step], object],
    statuses: Callable[[], Mapping[str, str]],
    lane: Callable[[Step], str] | None = None,
) -> None:
    """Every step of a run in waves (the reference when it feeds the others, the others,
    the comparison). Within a wave, steps of one lane run one after the other and the
    lanes run at once: the embedded executor gives each capability its lane, so the
    browser's jobs overlap the CPU's. Without `lane` (the CLI), one step at a time."""
    pending = order.first()
    while pending:
        lanes: dict[str, list[Step]] = {}
        for step in pending:
            lanes.setdefault("" if lane is None else lane(step), []).append(step)

        def run_lane(steps: list[Step]) -> None:
            for step in steps:
                run_step(step)

        if len(lanes) == 1:
            run_lane(pending)
        else:
            with ThreadPoolExecutor(len(lanes), thread_name_prefix="driftbench-lane") as pool:
                for done in [pool.submit(run_lane, steps) for steps in lanes.values()]:
                    done.result()
        now = statuses()
        pending = list(dict.fromkeys(s for step in pending for s in order.after(step, now)))
