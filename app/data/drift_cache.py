"""Drift aggregates kept up to date by folding in only the rows added since.

A scope ('model:<id>', 'architecture:<sig>') holds, per query (backend, against,
mode, metric), a `DriftState`: per depth a quantile sketch of the metric and the
sums of its layer-to-layer growth, plus the highest row id folded in (`mark`). A
query folds the rows with a higher id and answers from the state, so its cost
follows the rows added since the last query, not the rows stored.

That is exact only if no row with an id at or below the mark can still appear:
writers therefore take their scopes' row lock (`hold`) before inserting, so within
a scope ids are allocated in commit order (SQLite has one writer at a time anyway).
Removing or rewriting rows cannot be folded out of a sketch: it bumps the scope's
version (`bump`), and a state of an older version is rebuilt from the rows.

States live in this process (a bounded LRU), and each rebuilt one is also stored in
`drift_aggregates`, so a restarted or second server catches up from there instead of
from nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, insert, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.data.orm import DriftAggregate, DriftVersion
from app.data.quantile_sketch import QuantileSketch

KEPT_STATES = 256
# A state is stored again once this many rows were folded in since it last was.
STORE_EVERY_ROWS = 50_000


def model_scope(model_id: int) -> str:
    return f"model:{model_id}"


def architecture_scope(architecture: str) -> str:
    return f"architecture:{architecture}"


_ADD = (
    update(DriftVersion)
    .where(DriftVersion.scope == bindparam("in_scope"))
    .values(version=DriftVersion.version + bindparam("amount"))
)


def _add(db: Session | Connection, scope: str, amount: int) -> None:
    """Add `amount` (0: only lock the row) to the scope's version, creating its row."""
    params = {"in_scope": scope, "amount": amount}
    if db.execute(_ADD, params).rowcount > 0:
        return
    try:
        with db.begin_nested():
            db.execute(insert(DriftVersion).values(scope=scope, version=amount))
    except IntegrityError:  # another writer created it first
        db.execute(_ADD, params)


def hold(db: Session | Connection, model_id: int, architecture: str) -> None:
    """Lock the model's and architecture's scopes until the transaction ends: call before
    inserting divergence rows (always in this order, so two writers cannot deadlock)."""
    for scope in (model_scope(model_id), architecture_scope(architecture)):
        _add(db, scope, 0)


def bump(db: Session | Connection, model_id: int, architecture: str) -> None:
    """Rows of the model were removed or rewritten: its kept states must be rebuilt."""
    for scope in (model_scope(model_id), architecture_scope(architecture)):
        _add(db, scope, 1)


@dataclass(frozen=True)
class RowBatch:
    """Rows of one query ordered by (run, depth): what `DriftState.fold` takes."""

    ids: np.ndarray
    runs: np.ndarray
    models: np.ndarray
    depths: np.ndarray
    layers: list[str]
    classes: list[str]
    values: np.ndarray


@dataclass
class DepthState:
    layer: str
    class_name: str
    values: QuantileSketch = field(default_factory=QuantileSketch)
    growth_total: float = 0.0
    growth_count: int = 0


@dataclass
class DriftState:
    version: int
    mark: int = 0
    models: set[int] = field(default_factory=set)
    depths: dict[int, DepthState] = field(default_factory=dict)
    unstored_rows: int = 0
    answer: Any = None

    def fold(self, batch: RowBatch) -> None:
        """Add the batch's rows. A run's rows of one query arrive in one batch (they are
        written in one transaction), so its depth-to-depth steps are all within it."""
        if not batch.ids.size:
            return
        self.mark = max(self.mark, int(batch.ids.max()))
        self.models.update(batch.models.tolist())
        self.unstored_rows += int(batch.ids.size)
        self.answer = None
        previous, current = batch.values[:-1], batch.values[1:]
        step = (
            (batch.runs[1:] == batch.runs[:-1])
            & (batch.depths[1:] == batch.depths[:-1] + 1)
            & (previous != 0)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = current[step] / previous[step]
        step_depths = batch.depths[1:][step]
        for depth in np.unique(batch.depths).tolist():
            at = np.flatnonzero(batch.depths == depth)
            layer = min(batch.layers[i] for i in at)
            class_name = min(batch.classes[i] for i in at)
            state = self.depths.get(depth)
            if state is None:
                state = self.depths[depth] = DepthState(layer, class_name)
            state.layer, state.class_name = (
                min(state.layer, layer),
                min(state.class_name, class_name),
            )
            state.values.add(batch.values[at])
            grown = ratios[step_depths == depth]
            grown = grown[~np.isnan(grown)]
            state.growth_total += float(grown.sum())
            state.growth_count += int(grown.size)

    def as_json(self) -> dict[str, Any]:
        return {
            "mark": self.mark,
            "models": sorted(self.models),
            "depths": {
                str(depth): {
                    "layer": state.layer,
                    "class_name": state.class_name,
                    "values": state.values.as_json(),
                    "growth_total": repr(state.growth_total),
                    "growth_count": state.growth_count,
                }
                for depth, state in self.depths.items()
            },
        }

    @classmethod
    def from_json(cls, version: int, data: Any) -> DriftState | None:
        """None for what an older release stored there (a finished answer, no mark)."""
        if not isinstance(data, dict) or "mark" not in data:
            return None
        return cls(
            version=version,
            mark=data["mark"],
            models=set(data["models"]),
            depths={
                int(depth): DepthState(
                    layer=item["layer"],
                    class_name=item["class_name"],
                    values=QuantileSketch.from_json(item["values"]),
                    growth_total=float(item["growth_total"]),
                    growth_count=item["growth_count"],
                )
                for depth, item in data["depths"].items()
            },
        )


_states: OrderedDict[str, DriftState] = OrderedDict()
_key_locks: dict[str, threading.Lock] = {}
_registry = threading.Lock()


def _key_lock(key: str) -> threading.Lock:
    with _registry:
        return _key_locks.setdefault(key, threading.Lock())


def _remember(key: str, state: DriftState) -> None:
    with _registry:
        _states[key] = state
        _states.move_to_end(key)
        while len(_states) > KEPT_STATES:
            evicted, _ = _states.popitem(last=False)
            _key_locks.pop(evicted, None)


def _store(session: Session, key: str, state: DriftState) -> None:
    """Best effort, in a transaction of its own: a concurrent request may store first, or
    (SQLite) hold the write lock; the next rebuild or catch-up tries again."""
    session.rollback()
    try:
        session.merge(DriftAggregate(key=key, version=state.version, result=state.as_json()))
        session.commit()
        state.unstored_rows = 0
    except (IntegrityError, OperationalError):
        session.rollback()


def answered(
    session: Session,
    scope: str,
    query: tuple[str, ...],
    rows_after: Callable[[int], RowBatch],
    answer: Callable[[DriftState], Any],
) -> Any:
    """`answer(state)` for the scope's state of `query`, brought up to date with
    `rows_after(mark)`; the answer is kept until more rows arrive."""
    key = "|".join((scope, *query))
    row = session.get(DriftVersion, scope)
    version = row.version if row is not None else 0
    with _key_lock(key):
        with _registry:
            state = _states.get(key)
        if state is None or state.version != version:
            stored = session.get(DriftAggregate, key)
            state = None
            if stored is not None and stored.version == version:
                state = DriftState.from_json(version, stored.result)
                if state is not None:
                    state.unstored_rows = 0
            state = state or DriftState(version=version, unstored_rows=STORE_EVERY_ROWS)
        state.fold(rows_after(state.mark))
        if state.answer is None:
            state.answer = answer(state)
        result = state.answer
        _remember(key, state)
        if state.unstored_rows >= STORE_EVERY_ROWS:
            _store(session, key, state)
    return result
