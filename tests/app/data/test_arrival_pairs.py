"""Which backend of a run compares each pair on arrival, and what a failed backend leaves:
the database calls the job processes make, against real SQLite and PostgreSQL, from
threads that race as the jobs of one run do."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from app.core import db
from app.core.config import settings
from app.data import divergences, runs
from app.data.orm import (
    BackendRun,
    Base,
    DriftVersion,
    InputSet,
    LayerDivergence,
    Run,
    StoredModel,
)
from tests.support import throwaway_postgres
from workers.engine.compare import compare
from workers.engine.metrics import METRIC_NAMES
from workers.engine.results import BackendResult
from workers.engine.status import BackendStatus

BACKENDS = [f"backend-{i}" for i in range(8)]
ROUNDS = 6


@pytest.fixture(params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """This process's database calls go to a new database of the kind asked for."""

    def use(url: str) -> None:
        monkeypatch.setattr(settings, "data_dir", tmp_path / "data")
        monkeypatch.setattr(settings, "database_url", url)
        db.engine.cache_clear()
        db.session_factory.cache_clear()
        Base.metadata.create_all(db.engine())

    try:
        if request.param == "sqlite":
            use(f"sqlite:///{tmp_path / 'driftbench.db'}")
            yield
        else:
            with throwaway_postgres() as url:
                use(url)
                yield
                db.engine().dispose()
    finally:
        db.engine.cache_clear()
        db.session_factory.cache_clear()


def new_run(backends: list[str]) -> int:
    """A run whose backends are all running, as when their jobs are under way."""
    with db.session_scope() as session:
        number = session.scalar(select(func.count(StoredModel.id)))
        model = StoredModel(
            sha256=f"{number:064d}",
            name="m",
            file_format="keras",
            size_bytes=0,
            architecture="arch",
            architecture_label="arch",
            layers=[],
            backend_support={},
        )
        inputs = InputSet(model=model, kind="ones", shapes={}, sha256="0" * 64)
        session.add_all([model, inputs])
        session.flush()
        run = Run(
            model_id=model.id,
            input_set_id=inputs.id,
            reference=backends[0],
            modes=["accumulated"],
            backend_runs=[BackendRun(backend=b, status=BackendStatus.RUNNING) for b in backends],
        )
        session.add(run)
        session.flush()
        return run.id


def stored_at_once(run_id: int, backends: list[str]) -> dict[str, set[str]]:
    """Each backend recorded stored from its own thread, all released together: the
    backends each was told were stored before it."""
    start = threading.Barrier(len(backends))
    seen: dict[str, list[str] | None] = {}

    def store(backend: str) -> None:
        start.wait()
        seen[backend] = runs.record_stored(run_id, backend, Path(f"/outputs/{backend}.npz"), {})

    threads = [threading.Thread(target=store, args=(backend,)) for backend in backends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {backend: set(seen[backend] or ()) for backend in backends}


def test_each_pair_is_compared_by_exactly_one_of_its_backends(database: None) -> None:
    """Eight backends stored at once, six times over: for every pair, exactly one of the
    two is told the other was stored before it."""
    for _ in range(ROUNDS):
        earlier = stored_at_once(new_run(BACKENDS), BACKENDS)
        for a, b in itertools.combinations(BACKENDS, 2):
            assert (b in earlier[a]) != (a in earlier[b]), (a, b, earlier)
        # Who saw whom is one order: the k-th stored saw exactly k-1 others.
        assert sorted(len(others) for others in earlier.values()) == list(range(len(BACKENDS)))


def test_failed_and_earlier_attempts_are_not_stored(database: None) -> None:
    run_id = new_run(BACKENDS[:3])
    first, second, third = BACKENDS[:3]
    environment = {"output_scales": {"dense": 0.5}}
    assert runs.record_stored(run_id, first, Path("/outputs/a.npz"), environment) == []
    # What its outputs are judged by is there for the backends comparing with it now.
    with db.session_scope() as session:
        stored = session.scalars(select(BackendRun).filter_by(run_id=run_id, backend=first)).one()
        assert stored.environment == environment
    assert runs.record_stored(run_id, second, Path("/outputs/b.npz"), {}) == [first]
    assert runs.record_failure(run_id, first, "its job process died") == BackendStatus.FAILED
    assert runs.record_stored(run_id, third, Path("/outputs/c.npz"), {}) == [second]
    # A re-delivered job claims the backend again: what its first attempt stored is gone.
    with db.session_scope() as session:
        session.execute(
            BackendRun.__table__.update()
            .where(BackendRun.run_id == run_id, BackendRun.backend == second)
            .values(status=BackendStatus.QUEUED)
        )
    assert runs.claim_backend(run_id, second, max_attempts=3) == BackendStatus.RUNNING
    assert set(runs.record_stored(run_id, third, Path("/outputs/c.npz"), {}) or ()) == set()
    assert runs.record_stored(run_id + 1000, first, Path("/outputs/a.npz"), {}) is None


def stored_rows(run_id: int) -> set[tuple[str, str]]:
    with db.session_scope() as session:
        query = select(LayerDivergence.backend, LayerDivergence.against).filter_by(run_id=run_id)
        return {(backend, against) for backend, against in session.execute(query)}


def drift_versions() -> dict[str, int]:
    with db.session_scope() as session:
        return dict(session.execute(select(DriftVersion.scope, DriftVersion.version)).all())


def test_a_failed_backend_leaves_no_rows_whichever_stores_first(
    database: None, example: Any
) -> None:
    """Rows compared with a backend before it failed go with its failure, and the drift
    aggregates of the model are rebuilt; a comparison with it stored after its failure is
    dropped; the other rows stay."""
    reference, dying, other = BACKENDS[:3]
    run_id = new_run([reference, dying, other])
    with db.session_scope() as session:
        run = session.get(Run, run_id)
        assert run is not None
        rows = [
            {
                "run_id": run_id,
                "model_id": run.model_id,
                "architecture": "arch",
                "backend": backend,
                "against": against,
                "mode": "accumulated",
                "layer": "dense",
                "class_name": "Dense",
                "depth": 1,
                "histogram": {},
                "verdict": "rounding",
                **dict.fromkeys(METRIC_NAMES, 0),
            }
            for backend, against in [(dying, reference), (other, reference), (other, dying)]
        ]
        session.execute(insert(LayerDivergence), rows)
    before = drift_versions()
    assert runs.record_failure(run_id, dying, "its job process died") == BackendStatus.FAILED
    assert stored_rows(run_id) == {(other, reference)}
    assert all(drift_versions()[scope] == version + 1 for scope, version in before.items())

    # A comparison made while it was still stored lands after its failure.
    graph = example("dense10x50").graph
    rng = np.random.default_rng(0)
    results = {
        backend: BackendResult(
            backend=backend,
            status=BackendStatus.DONE,
            outputs={
                "accumulated": {
                    layer.name: rng.standard_normal((2, 50)).astype(np.float32)
                    for layer in graph.compute_layers
                }
            },
        )
        for backend in (reference, dying, other)
    }
    comparisons = compare(graph, results, against=reference, backends=[dying, other])
    assert {c.backend for c in comparisons} == {dying, other}
    divergences.replace_divergences(
        run_id=run_id, replaced={reference: [dying, other]}, comparisons=comparisons
    )
    assert stored_rows(run_id) == {(other, reference)}
    with db.session_scope() as session:
        layers = session.scalars(select(LayerDivergence.layer).filter_by(run_id=run_id)).all()
    assert sorted(layers) == sorted(layer.name for layer in graph.compute_layers)
