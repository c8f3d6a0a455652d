"""Aggregate drift queries, done by the database over the indexed divergence table.

Percentiles are nearest-rank, computed with window functions (ROW_NUMBER and
COUNT over each depth), and the layer-to-layer growth with LAG over each run's
depths, which SQLite and PostgreSQL both run in one pass; no rows are pulled into
Python to be looped over.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Select, case, cast, func, select
from sqlalchemy.orm import Session

from app.data.orm import LayerDivergence as LD
from workers.engine.json_safe import jsonable


def _filtered(metric: str, backend: str, against: str, mode: str, **match: Any) -> Any:
    value = cast(getattr(LD, metric), Float).label("value")
    return (
        select(LD.run_id, LD.model_id, LD.depth, LD.layer, LD.class_name, value)
        .where(
            LD.backend == backend,
            LD.against == against,
            LD.mode == mode,
            getattr(LD, metric).is_not(None),
            *(getattr(LD, k) == v for k, v in match.items()),
        )
        .subquery("base")
    )


def _per_depth_stats(base: Any, *, growth: bool) -> Select[Any]:
    """count/mean/median/p95/max per depth; with `growth`, the mean step from depth - 1."""
    windows = [
        func.row_number().over(partition_by=base.c.depth, order_by=base.c.value).label("rn"),
        func.count().over(partition_by=base.c.depth).label("cnt"),
    ]
    if growth:
        by_run = {"partition_by": base.c.run_id, "order_by": base.c.depth}
        windows += [
            func.lag(base.c.value).over(**by_run).label("previous"),
            func.lag(base.c.depth).over(**by_run).label("previous_depth"),
        ]
    ranked = select(base, *windows).subquery("ranked")
    columns = [
        ranked.c.depth,
        func.min(ranked.c.layer).label("layer"),
        func.min(ranked.c.class_name).label("class_name"),
        func.max(ranked.c.cnt).label("count"),
        func.avg(ranked.c.value).label("mean"),
        func.min(_from_rank(ranked, 0.5)).label("median"),
        func.min(_from_rank(ranked, 0.95)).label("p95"),
        func.max(ranked.c.value).label("max"),
    ]
    if growth:
        step = case(
            (
                ranked.c.previous_depth == ranked.c.depth - 1,
                ranked.c.value / func.nullif(ranked.c.previous, 0.0),
            )
        )
        columns.append(func.avg(step).label("growth"))
    return select(*columns).group_by(ranked.c.depth)


def _from_rank(ranked: Any, fraction: float) -> Any:
    """The value when its rank reaches the fraction; MIN over these is the nearest rank."""
    return case((ranked.c.rn >= ranked.c.cnt * fraction, ranked.c.value))


def model_layer_drift(
    session: Session, *, model_id: int, backend: str, against: str, mode: str, metric: str
) -> list[dict[str, Any]]:
    base = _filtered(metric, backend, against, mode, model_id=model_id)
    stats = _per_depth_stats(base, growth=False).subquery("stats")
    rows = session.execute(select(stats).order_by(stats.c.depth)).mappings().all()
    return [
        jsonable(
            {
                key: row[key]
                for key in ("layer", "class_name", "depth", "count", "mean", "median", "p95", "max")
            }
        )
        for row in rows
    ]


def depth_drift(
    session: Session, *, architecture: str, backend: str, against: str, mode: str, metric: str
) -> tuple[int, list[dict[str, Any]]]:
    """Per depth over every model of the architecture, with the mean layer-to-layer growth."""
    base = _filtered(metric, backend, against, mode, architecture=architecture)
    stats = _per_depth_stats(base, growth=True).subquery("stats")
    rows = session.execute(select(stats).order_by(stats.c.depth)).mappings().all()
    models = session.scalar(select(func.count(func.distinct(base.c.model_id)))) or 0
    return models, [
        jsonable(
            {key: row[key] for key in ("depth", "count", "mean", "median", "p95", "max", "growth")}
        )
        for row in rows
    ]
