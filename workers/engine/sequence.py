"""The order of a run's steps, in one place for the CLI, the embedded executor and Celery.

The reference runs first: the isolated mode feeds every other backend the
reference's input to each layer. The other backends come next and do not depend
on each other (Celery runs them at once). The comparison comes last, once every
backend has finished. Each executor asks `RunOrder.after` what may start when a
step has finished, and runs those steps its own way.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
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

    @classmethod
    def of(cls, reference: str, backends: Iterable[str]) -> RunOrder:
        """The reference and every other backend once, in the order asked for."""
        others = tuple(b for b in dict.fromkeys(backends) if b != reference)
        return cls(reference, others)

    @property
    def backends(self) -> tuple[str, ...]:
        return (self.reference, *self.others)

    def first(self) -> list[Step]:
        return [Step(self.reference)]

    def after(self, finished: Step, statuses: Mapping[str, str]) -> list[Step]:
        """What may start now that `finished` has: the other backends still queued once
        the reference is done, and the comparison once every backend has finished. Two
        backends finishing together may both be told to compare: executors that run
        steps at once claim the comparison (`claim_comparison` in app/data/runs.py)."""
        if finished.is_comparison:
            return []
        if finished.backend == self.reference:
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
) -> None:
    """Every step of a run, one after the other (the CLI and the embedded executor)."""
    pending = deque(order.first())
    while pending:
        step = pending.popleft()
        run_step(step)
        pending.extend(order.after(step, statuses()))
