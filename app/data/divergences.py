"""Divergence rows in the database: storing a comparison set, reading a run's rows, and
reading a run's stored outputs back for a comparison."""

from __future__ import annotations

import csv
import io
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, delete, insert, or_, select
from sqlalchemy.orm import Session

from app.core.config import settings
from app.core.db import connection_scope, session_scope
from app.core.errors import Conflict, InvalidRequest, OutputsExpired
from app.data import drift_cache, runs, storage
from app.data.orm import BackendRun, LayerDivergence, Run, StoredModel
from app.data.runs import get_run
from workers.engine.compare import Comparison
from workers.engine.explanations import LayerDiagnosis
from workers.engine.graph import ModelGraph, graph_from_summary
from workers.engine.json_safe import jsonable
from workers.engine.metrics import DRIFT_VERDICTS, METRIC_NAMES, histogram_edges
from workers.engine.results import BackendResult, Mode
from workers.engine.status import BackendStatus, RunStatus

# Where a row is: the columns before the metrics in the API's rows and the CSV.
ROW_KEY = ("backend", "against", "mode", "layer", "class_name", "depth")
# The diagnosis's columns: the layer's own error, what its backend's precision allows,
# and its best explanation.
LOCAL_COLUMNS = (
    "local_rel_l2",
    "local_bound",
    "local_verdict",
    "explained_by",
    "precision_bound",
)
CSV_COLUMNS = (*ROW_KEY, *METRIC_NAMES, "verdict", *LOCAL_COLUMNS)


def _rows_of(
    run_id: int, model_id: int, architecture: str, comparisons: list[Comparison]
) -> list[dict[str, Any]]:
    """Plain column dicts, inserted in one executemany: ORM objects took about 100 ms of
    a 7-backend dense10x50 comparison's 360 (30 ms this way)."""
    rows = []
    for comparison in comparisons:
        for row in comparison.layers:
            metrics = row.as_dict()
            for key in ROW_KEY:
                metrics.pop(key, None)
            # The edges follow from max_abs and the bin count (`row_dict` makes them again).
            del metrics["hist_edges"]
            histogram = {"counts": metrics.pop("hist_counts")}
            metrics["diagnosis"] = jsonable(metrics["diagnosis"])
            rows.append(
                {
                    "run_id": run_id,
                    "model_id": model_id,
                    "architecture": architecture,
                    "backend": comparison.backend,
                    "against": comparison.against,
                    "mode": comparison.mode,
                    "layer": row.layer,
                    "class_name": row.class_name,
                    "depth": row.depth,
                    "histogram": histogram,
                    **metrics,
                }
            )
    return rows


def replace_divergences(
    *,
    run_id: int,
    replaced: Mapping[str, Collection[str] | None],
    comparisons: list[Comparison],
) -> None:
    """Store comparisons of a run in one transaction, replacing the rows they supersede
    (idempotence): for each target in `replaced`, the rows of the backends it names
    against that target (None: all of them; an external upload or a backend compared on
    arrival names itself). A comparison with a backend that has failed meanwhile (its
    outputs were stored, then its job died) is dropped: `runs.record_failure` takes the
    same locks before it deletes such rows, so one of the two always sees the other."""
    # The run's scope read as two columns, not the ORM's run with its model, and the rows
    # replaced deleted in one statement, not one a target: about 0.3 of the 5.5 ms that
    # storing a TF.js backend's comparison (20 rows) takes.
    with connection_scope() as connection:
        scope = runs.run_scope(connection, run_id)
        if scope is None:
            return
        model_id, architecture = scope
        # Made before the first write: the writer lock is held from there to the commit.
        rows = _rows_of(run_id, model_id, architecture, comparisons)
        drift_cache.hold(connection, model_id, architecture)
        failed = set(connection.scalars(_FAILED, {"run_id": run_id}))
        rows = [row for row in rows if not {row["backend"], row["against"]} & failed]
        superseded = [
            LayerDivergence.against == against
            if backends is None
            else and_(LayerDivergence.against == against, LayerDivergence.backend.in_(backends))
            for against, backends in replaced.items()
        ]
        if superseded:
            removed = connection.execute(
                delete(LayerDivergence).where(LayerDivergence.run_id == run_id, or_(*superseded))
            ).rowcount
            if removed:
                drift_cache.bump(connection, model_id, architecture)
        if rows:
            connection.execute(_INSERT_ROWS, rows)


_FAILED = select(BackendRun.backend).where(
    BackendRun.run_id == bindparam("run_id"), BackendRun.status == BackendStatus.FAILED
)
_INSERT_ROWS = insert(LayerDivergence)


def stored_graph(model: StoredModel) -> ModelGraph:
    return graph_from_summary(model.name, model.layers)


def stored_results(
    run_id: int, reference: str, backend_runs: Iterable[Row[Any]]
) -> dict[str, BackendResult]:
    """The backends of a run with stored outputs (of `backend_runs`: rows of `backend`,
    `status`, `outputs_path` and `environment`), those read back from disk: the finished
    ones, and those recorded stored that are still being compared on arrival
    (`runs.record_stored`).

    The reference's isolated outputs are its accumulated ones (each layer already
    received the reference's own inputs), so they are stored once and aliased here.
    Backends whose outputs were capped hold fewer samples: each pair is compared over
    the first samples both of its sides stored (workers/engine/compare.py).
    """
    stored = [
        row for row in backend_runs if row.status in runs.STORED_STATUSES and row.outputs_path
    ]
    results = {}
    for row in stored:
        backend = row.backend
        path = storage.outputs_path(run_id, backend)
        outputs = {
            mode: storage.StoredLayers(path, mode, list(layers))
            for mode, layers in storage.stored_shapes(path).items()
        }
        if backend == reference:
            outputs["isolated"] = outputs["accumulated"]
        # The environment record goes along: a quantized backend's reported output
        # scales are what its layers are judged with (workers.diagnosis.runs).
        results[backend] = BackendResult(
            backend=backend,
            status=BackendStatus.DONE,
            outputs=outputs,
            environment=row.environment or {},
        )
    return results


@dataclass(frozen=True)
class StoredRun:
    """What comparing a finished run needs: its graph, its backends' stored outputs."""

    reference: str
    compare_against: tuple[str, ...]
    modes: tuple[Mode, ...]
    graph: ModelGraph
    results: dict[str, BackendResult]


_RUN_COMPARED = (
    select(
        Run.reference,
        Run.compare_against,
        Run.modes,
        StoredModel.id.label("model_id"),
        StoredModel.sha256,
        StoredModel.name,
    )
    .join(StoredModel, Run.model_id == StoredModel.id)
    .where(Run.id == bindparam("run_id"))
)
_BACKENDS_STORED = (
    select(BackendRun.backend, BackendRun.status, BackendRun.outputs_path, BackendRun.environment)
    .where(BackendRun.run_id == bindparam("run_id"))
    .order_by(BackendRun.id)
)
_MODEL_LAYERS = select(StoredModel.layers).where(StoredModel.id == bindparam("model_id"))


def stored_run(run_id: int, backends: Collection[str] | None = None) -> StoredRun | None:
    """The run as a comparison reads it; with `backends`, only those backends' outputs."""
    with connection_scope() as connection:
        run = connection.execute(_RUN_COMPARED, {"run_id": run_id}).first()
        if run is None:
            return None
        graph = _model_graph(connection, run.model_id, run.sha256, run.name)
        if graph is None:  # deleted since the run was read
            return None
        backend_runs = [
            row
            for row in connection.execute(_BACKENDS_STORED, {"run_id": run_id})
            if backends is None or row.backend in backends
        ]
    return StoredRun(
        reference=run.reference,
        compare_against=tuple(run.compare_against or ()),
        modes=tuple(run.modes),
        graph=graph,
        results=stored_results(run_id, run.reference, backend_runs),
    )


# Graphs of the models compared lately, by file and name (a sha256 names one model's
# file, whose summary is the same every time): a run's every comparison reads its
# model's, and reading and parsing a big model's summary would cost each of them again.
KEPT_GRAPHS = 8
_graphs: OrderedDict[tuple[str, str], ModelGraph] = OrderedDict()
_graphs_lock = threading.Lock()


def _model_graph(
    connection: Connection, model_id: int, sha256: str, name: str
) -> ModelGraph | None:
    with _graphs_lock:
        graph = _graphs.get((sha256, name))
        if graph is not None:
            _graphs.move_to_end((sha256, name))
            return graph
    layers = connection.scalar(_MODEL_LAYERS, {"model_id": model_id})
    if layers is None:
        return None
    graph = graph_from_summary(name, layers)
    with _graphs_lock:
        _graphs[sha256, name] = graph
        while len(_graphs) > KEPT_GRAPHS:
            _graphs.popitem(last=False)
    return graph


def check_comparable(*, run_id: int, against: str) -> None:
    """Nothing when the run's finished backends can be compared with `against` from
    their stored outputs; otherwise the reason it cannot, naming what is missing."""
    with session_scope() as session:
        run = get_run(session, run_id)
        if run.status != RunStatus.DONE:
            raise Conflict(f"run {run_id} is {run.status}; compare it once it is done")
        finished = {b.backend: b for b in run.backend_runs if b.status == BackendStatus.DONE}
        if against not in finished:
            known = ", ".join(sorted(b.backend for b in run.backend_runs))
            raise InvalidRequest(
                f"run {run_id} has no finished backend {against!r} to compare "
                f"against (backends: {known})"
            )
        if len(finished) < 2:
            raise InvalidRequest(
                f"run {run_id} has no other finished backend to compare with {against!r}"
            )
        # The backend asked for is named first when its own outputs are the ones gone.
        expired = [b for b in (finished[against], *finished.values()) if b.outputs_expired_at]
        if expired:
            gone = expired[0]
            raise OutputsExpired(
                run_id, gone.backend, gone.outputs_expired_at, settings.output_retention_days
            )


def read_rows(
    session: Session, run: Run, *, against: str, mode: str, backend: str | None
) -> list[LayerDivergence]:
    """The stored rows of one comparison set. A finished run not yet compared with
    `against` says how to ask for it: reads never compute (they need no write scope)."""
    query = select(LayerDivergence).filter_by(run_id=run.id, against=against, mode=mode)
    if backend is not None:
        query = query.filter_by(backend=backend)
    rows = list(session.scalars(query.order_by(LayerDivergence.backend, LayerDivergence.depth)))
    if rows or against == run.reference or run.status != RunStatus.DONE:
        return rows
    compared = session.scalar(
        select(LayerDivergence.id).filter_by(run_id=run.id, against=against).limit(1)
    )
    if compared is None:
        raise Conflict(
            f"run {run.id} has not been compared against {against!r}: "
            f'POST /api/runs/{run.id}/comparisons {{"against": "{against}"}} first'
        )
    return rows


def has_mode(session: Session, run_id: int, mode: str) -> bool:
    """Whether any row of the run is in `mode` (an external upload's isolated outputs)."""
    query = select(LayerDivergence.id).filter_by(run_id=run_id, mode=mode).limit(1)
    return session.scalar(query) is not None


def compared_pairs(run_id: int) -> set[tuple[str, str]]:
    """The (target, backend) pairs of the run with rows: those compared on arrival."""
    with connection_scope() as connection:
        return {
            (against, backend)
            for against, backend in connection.execute(_COMPARED_PAIRS, {"run_id": run_id})
        }


_COMPARED_PAIRS = (
    select(LayerDivergence.against, LayerDivergence.backend)
    .where(LayerDivergence.run_id == bindparam("run_id"))
    .distinct()
)


def stored_diagnoses(
    run_id: int, backend: str, against: str
) -> dict[str, dict[str, LayerDiagnosis]]:
    """The backend's layer diagnoses by mode, read back from its rows against `against`,
    for the modes where every row has one: a diagnosis does not depend on what the
    backend is compared with, so a comparison with another target reuses them instead of
    diagnosing again."""
    found: dict[str, dict[str, LayerDiagnosis]] = {}
    incomplete = set()  # a budget share ran out, or the diagnosis failed: diagnose anew
    with connection_scope() as connection:
        params = {"run_id": run_id, "backend": backend, "against": against}
        for row in connection.execute(_STORED_DIAGNOSES, params):
            if row.local_verdict is None:
                incomplete.add(row.mode)
                continue
            found.setdefault(row.mode, {})[row.layer] = LayerDiagnosis.from_dict(
                {column: getattr(row, column) for column in LOCAL_COLUMNS}
                | {"diagnosis": row.diagnosis}
            )
    return {mode: layers for mode, layers in found.items() if mode not in incomplete}


_STORED_DIAGNOSES = select(
    LayerDivergence.mode,
    LayerDivergence.layer,
    LayerDivergence.diagnosis,
    *(LayerDivergence.__table__.c[column] for column in LOCAL_COLUMNS),
).where(
    LayerDivergence.run_id == bindparam("run_id"),
    LayerDivergence.backend == bindparam("backend"),
    LayerDivergence.against == bindparam("against"),
)


def compared_against(session: Session, run_id: int) -> list[str]:
    query = select(LayerDivergence.against).filter_by(run_id=run_id).distinct()
    return sorted(session.scalars(query))


def row_dict(row: LayerDivergence) -> dict[str, Any]:
    values = {column: getattr(row, column) for column in CSV_COLUMNS}
    counts = row.histogram["counts"]
    # Rows stored before the edges were left out still hold theirs.
    edges = row.histogram.get("edges") or histogram_edges(row.max_abs, len(counts))
    values["histogram"] = {"edges": edges, "counts": counts}
    values["diagnosis"] = row.diagnosis
    return jsonable(values)


def drift_starts(rows: list[LayerDivergence]) -> dict[str, dict[str, Any] | None]:
    starts: dict[str, dict[str, Any] | None] = {}
    for row in rows:
        starts.setdefault(row.backend, None)
        if starts[row.backend] is None and row.verdict in DRIFT_VERDICTS:
            starts[row.backend] = {
                "layer": row.layer,
                "depth": row.depth,
                "verdict": row.verdict,
                "explained_by": row.explained_by,
            }
    return starts


def not_provided(rows: list[LayerDivergence], graph: ModelGraph) -> dict[str, list[str]]:
    """Per backend with rows, the model's layers it has none for: the layers one side of
    the comparison did not output."""
    compared: dict[str, set[str]] = {}
    for row in rows:
        compared.setdefault(row.backend, set()).add(row.layer)
    return {
        backend: [layer.name for layer in graph.compute_layers if layer.name not in layers]
        for backend, layers in compared.items()
    }


def rows_csv(rows: list[LayerDivergence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = [getattr(row, column) for column in CSV_COLUMNS]
        writer.writerow(["" if v is None else v for v in values])
    return buffer.getvalue()
