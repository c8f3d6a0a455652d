"""Aggregate drift answers kept in the database until the rows under them change.

Percentiles over every run of a model or an architecture need all their rows
sorted; with thousands of runs that is hundreds of milliseconds, while dashboards
ask the same question again and again between runs. Every write of divergence
rows bumps the version of its model's and its architecture's scope in the same
transaction, and an answer is reused only while its scope's version is the one it
was computed at. The version is read before the rows, so a stored answer is never
newer-labelled than its data; at worst it is recomputed once more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from app.data.orm import DriftAggregate, DriftVersion


def model_scope(model_id: int) -> str:
    return f"model:{model_id}"


def architecture_scope(architecture: str) -> str:
    return f"architecture:{architecture}"


def _increment(session: Session, scope: str) -> bool:
    """Add one to the scope's version; False when the scope has no row yet."""
    changed = session.execute(
        update(DriftVersion)
        .where(DriftVersion.scope == scope)
        .values(version=DriftVersion.version + 1)
    )
    return changed.rowcount > 0


def bump(session: Session, model_id: int, architecture: str) -> None:
    """Mark the model's and architecture's aggregates stale (call inside the write)."""
    for scope in (model_scope(model_id), architecture_scope(architecture)):
        if _increment(session, scope):
            continue
        try:
            with session.begin_nested():
                session.add(DriftVersion(scope=scope, version=1))
        except IntegrityError:  # another writer created it first
            _increment(session, scope)


def cached(session: Session, scope: str, query: tuple[str, ...], compute: Callable[[], Any]) -> Any:
    """The stored answer to `query` within `scope` if the scope has not changed since it
    was computed, else `compute()`."""
    key = "|".join((scope, *query))
    row = session.get(DriftVersion, scope)
    version = row.version if row is not None else 0
    stored = session.get(DriftAggregate, key)
    if stored is not None and stored.version == version:
        return stored.result
    result = compute()
    # Storing is best effort, in a transaction of its own: a concurrent request may
    # store the same answer first, or (SQLite) hold the write lock; either way the
    # answer computed here is returned and the next request tries again.
    session.rollback()
    try:
        session.merge(DriftAggregate(key=key, version=version, result=result))
        session.commit()
    except (IntegrityError, OperationalError):
        session.rollback()
    return result
