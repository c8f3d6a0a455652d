"""One page of a list endpoint's rows, with the count of all of them."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")


def page(
    session: Session, query: Select[tuple[T]], *, order_by: Any, skip: int, limit: int
) -> tuple[int, list[T]]:
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(order_by).offset(skip).limit(limit)).all()
    return count, list(rows)
