"""Reading a run's results: divergence rows (computed on demand for a new `against`),
where drift starts, and single layer outputs."""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import settings
from app.errors import ApiError, OutputsExpired
from app.models import METRIC_COLUMNS, LayerDivergence, Run
from app.report import jsonable
from workers.drift_job import DRIFT_VERDICTS, compare
from workers.run_job import replace_divergences, stored_graph, stored_results

CSV_COLUMNS = (
    "backend",
    "against",
    "mode",
    "layer",
    "class_name",
    "depth",
    *METRIC_COLUMNS,
    "verdict",
)


def ensure_comparison(session: Session, run: Run, against: str) -> None:
    """Compare every finished backend with `against` from stored outputs, once.

    While the run is still going, a backend of it that has not finished yet simply
    has no rows so far; only a finished run without it is an error.
    """
    finished = {b.backend: b for b in run.backend_runs if b.status == "done"}
    in_progress = run.status not in ("done", "failed")
    if (
        against not in finished
        and in_progress
        and any(b.backend == against for b in run.backend_runs)
    ):
        return
    if against not in finished:
        known = ", ".join(sorted(b.backend for b in run.backend_runs))
        raise ApiError(
            422,
            f"run {run.id} has no finished backend {against!r} to compare "
            f"against (backends: {known})",
        )
    exists = session.scalar(
        select(LayerDivergence.id).filter_by(run_id=run.id, against=against).limit(1)
    )
    if exists is not None or run.status != "done":
        return
    # The backend asked for is named first when its own outputs are the ones gone.
    expired = [b for b in (finished[against], *finished.values()) if b.outputs_expired_at]
    if expired:
        raise OutputsExpired(expired[0])
    comparisons = compare(
        stored_graph(run.model),
        stored_results(run),
        against=against,
        modes=run.modes,
        thresholds=settings.verdict_thresholds(),
        histogram_bins=settings.histogram_bins,
    )
    replace_divergences(run.id, against, comparisons)
    session.expire_all()


def divergence_rows(
    session: Session, run: Run, *, against: str, mode: str, backend: str | None
) -> list[LayerDivergence]:
    query = select(LayerDivergence).filter_by(run_id=run.id, against=against, mode=mode)
    if backend is not None:
        query = query.filter_by(backend=backend)
    return list(session.scalars(query.order_by(LayerDivergence.backend, LayerDivergence.depth)))


def row_dict(row: LayerDivergence) -> dict[str, Any]:
    values = {column: getattr(row, column) for column in CSV_COLUMNS}
    values["histogram"] = row.histogram
    return jsonable(values)


def drift_starts(rows: list[LayerDivergence]) -> dict[str, dict[str, Any] | None]:
    starts: dict[str, dict[str, Any] | None] = {}
    for row in rows:
        starts.setdefault(row.backend, None)
        if starts[row.backend] is None and row.verdict in DRIFT_VERDICTS:
            starts[row.backend] = {"layer": row.layer, "depth": row.depth, "verdict": row.verdict}
    return starts


def rows_csv(rows: list[LayerDivergence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = [getattr(row, column) for column in CSV_COLUMNS]
        writer.writerow(["" if v is None else v for v in values])
    return buffer.getvalue()
