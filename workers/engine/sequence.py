"""The order of a run's steps, in one place for the CLI, the embedded executor and Celery.

In the isolated mode the reference runs first: it feeds every other backend the
reference's input to each layer. Otherwise every backend starts at once, the
reference first in its lane. The other backends do not depend on each other (Celery
runs them at once; the embedded executor runs each capability's at once with the
others'). Each backend's job compares it with the reference, and the reference each
backend stored before it, as it arrives (workers/jobs.py); the comparison step comes
last, once every backend has finished, and compares what is left. Each executor asks
`RunOrder.after` what may start when a step has finished, and runs those steps its own
way. A step may hand on a step of its own (a backend's comparison on arrival, from a
lane that runs no comparisons): `run_in_order` queues it in its lane, or runs it next
in the lane that handed it on when its own is not in the wave; a lane with nothing left
to run takes a portable one from another lane's queue.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from workers.engine.status import BackendStatus


@dataclass(frozen=True)
class Step:
    """One backend of a run, or (`backend` None) the comparison of all of them, or
    (`earlier` given) the comparison on arrival of a backend already stored, after the
    backends in `earlier`: handed on by the job that ran it, in `lane` when run by the
    lane that handed it on."""

    backend: str | None = None
    earlier: tuple[str, ...] | None = None
    lane: str | None = None
    # A comparison on arrival that any lane's job process may run (its outputs are small):
    # a lane left with nothing to run takes it from the lane it was queued in.
    portable: bool = False
    # Its lane had nothing else queued when it started: a job that would hand a portable
    # comparison on compares it itself, as its lane would take it back anyway. A hint to
    # the job, not part of which step it is.
    lane_ends: bool = field(default=False, compare=False)

    @property
    def is_comparison(self) -> bool:
        return self.backend is None

    @property
    def compares_arrival(self) -> bool:
        return self.earlier is not None


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


# What running a step gives: a step it hands on, or None.
StepRunner = Callable[[Step], Step | None]


class _Lanes:
    """One wave's lanes: a thread and a queue each; a lane thread that has run its queue
    waits for steps handed on to it until every lane is idle."""

    def __init__(self, run_step: StepRunner, lane: Callable[[Step], str]) -> None:
        self.run_step = run_step
        self.lane = lane
        self.queues: dict[str, deque[Step]] = {}
        self.running: set[str] = set()
        self.errors: list[BaseException] = []
        self.changed = threading.Condition()

    def run(self, steps: list[Step]) -> None:
        for step in steps:
            self.queues.setdefault(self.lane(step), deque()).append(step)
        threads = [
            threading.Thread(target=self._work, args=(name,), name=f"driftbench-lane-{name}")
            for name in self.queues
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def _finished(self) -> bool:
        return bool(self.errors) or not (self.running or any(self.queues.values()))

    def _next(self, name: str) -> Step | None:
        """This lane's next step, marked `lane_ends` when it is the last one queued; with
        its queue run, the first portable comparison waiting in another lane's, to run
        here: the browser's lane, its last page compared, compares a TF.js backend
        handed on before it while the CPU's lane still compares another."""
        if self.queues[name]:
            step = self.queues[name].popleft()
            return step if self.queues[name] else dataclasses.replace(step, lane_ends=True)
        for other, queue in self.queues.items():
            taken = next((s for s in queue if s.portable and s.compares_arrival), None)
            if other != name and taken is not None:
                queue.remove(taken)
                return dataclasses.replace(taken, lane=name)
        return None

    def _work(self, name: str) -> None:
        while True:
            with self.changed:
                step: Step | None = self._next(name)
                while step is None and not self._finished():
                    self.changed.wait()
                    step = self._next(name)
                if step is None or self.errors:
                    return
                self.running.add(name)
            try:
                while step is not None:
                    step = self._hand_on(name, self.run_step(step))
            except BaseException as error:  # ends the wave; run_in_order raises it
                with self.changed:
                    self.errors.append(error)
            finally:
                with self.changed:
                    self.running.discard(name)
                    self.changed.notify_all()

    def _hand_on(self, name: str, step: Step | None) -> Step | None:
        """None when `step` went to its own lane's queue; otherwise (its lane is this
        one, or not in this wave) the step to run next in this lane, marked so."""
        if step is None:
            return None
        target = self.lane(step)
        if target != name and target in self.queues:
            with self.changed:
                self.queues[target].append(step)
                self.changed.notify_all()
            return None
        return dataclasses.replace(step, lane=name)


def run_in_order(
    order: RunOrder,
    run_step: StepRunner,
    statuses: Callable[[], Mapping[str, str]],
    lane: Callable[[Step], str] | None = None,
) -> None:
    """Every step of a run in waves (the reference when it feeds the others, the others,
    the comparison). Within a wave, steps of one lane run one after the other and the
    lanes run at once: the embedded executor gives each capability its lane, so the
    browser's jobs overlap the CPU's, and a step handed on is queued in its lane. Without
    `lane` (the CLI), one step at a time, a step handed on next."""
    pending = order.first()
    while pending:
        if lane is None:
            for step in pending:
                handed: Step | None = step
                while handed is not None:
                    handed = run_step(handed)
        else:
            _Lanes(run_step, lane).run(pending)
        now = statuses()
        pending = list(dict.fromkeys(s for step in pending for s in order.after(step, now)))
