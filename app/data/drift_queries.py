"""Aggregate drift queries: per layer of one model, per depth across an architecture.

Answers come from the scope's kept state (app.data.drift_cache), which the database
feeds with only the rows it has not seen: an index range scan on (scope, backend,
against, mode, id). Count, mean and max are exact; median and p95 are nearest-rank
values within the sketch's relative error (app.data.quantile_sketch.ALPHA).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Float, cast, select
from sqlalchemy.orm import Session

from app.data.drift_cache import (
    DriftState,
    RowBatch,
    answered,
    architecture_scope,
    model_scope,
)
from app.data.orm import LayerDivergence as LD
from workers.engine.json_safe import jsonable


def _rows_after(
    session: Session, scope_match: Any, backend: str, against: str, mode: str, metric: str
) -> Any:
    column = getattr(LD, metric)

    def rows_after(mark: int) -> RowBatch:
        rows = session.execute(
            select(
                LD.id,
                LD.run_id,
                LD.model_id,
                LD.depth,
                LD.layer,
                LD.class_name,
                cast(column, Float),
            )
            .where(
                scope_match,
                LD.backend == backend,
                LD.against == against,
                LD.mode == mode,
                LD.id > mark,
                column.is_not(None),
            )
            .order_by(LD.run_id, LD.depth, LD.id)
        ).all()
        columns = list(zip(*rows, strict=True)) or [()] * 7
        return RowBatch(
            ids=np.asarray(columns[0], dtype=np.int64),
            runs=np.asarray(columns[1], dtype=np.int64),
            models=np.asarray(columns[2], dtype=np.int64),
            depths=np.asarray(columns[3], dtype=np.int64),
            layers=list(columns[4]),
            classes=list(columns[5]),
            values=np.asarray(columns[6], dtype=np.float64),
        )

    return rows_after


def _depth_stats(state: DriftState) -> list[dict[str, Any]]:
    stats = []
    for depth in sorted(state.depths):
        item = state.depths[depth]
        values = item.values
        stats.append(
            {
                "depth": depth,
                "layer": item.layer,
                "class_name": item.class_name,
                "count": values.count,
                "mean": values.mean,
                "median": values.quantile(0.5),
                "p95": values.quantile(0.95),
                "max": values.high if values.count else None,
                "growth": item.growth_total / item.growth_count if item.growth_count else None,
            }
        )
    return stats


def model_layer_drift(
    session: Session, *, model_id: int, backend: str, against: str, mode: str, metric: str
) -> list[dict[str, Any]]:
    keys = ("layer", "class_name", "depth", "count", "mean", "median", "p95", "max")
    return answered(
        session,
        model_scope(model_id),
        (backend, against, mode, metric),
        _rows_after(session, LD.model_id == model_id, backend, against, mode, metric),
        lambda state: [jsonable({key: row[key] for key in keys}) for row in _depth_stats(state)],
    )


def depth_drift(
    session: Session, *, architecture: str, backend: str, against: str, mode: str, metric: str
) -> tuple[int, list[dict[str, Any]]]:
    """Per depth over every model of the architecture, with the mean layer-to-layer growth."""
    keys = ("depth", "count", "mean", "median", "p95", "max", "growth")
    return answered(
        session,
        architecture_scope(architecture),
        (backend, against, mode, metric),
        _rows_after(session, LD.architecture == architecture, backend, against, mode, metric),
        lambda state: (
            len(state.models),
            [jsonable({key: row[key] for key in keys}) for row in _depth_stats(state)],
        ),
    )
