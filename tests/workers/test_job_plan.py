"""A job sent its run's plan by the executor does not read the plan again (12 reads a
run of seven backends, 0.4-0.8 ms each), also once the job has been pickled as it is
for a job process; one sent none reads it, as under Celery. A job that hands its
comparison on keeps it when its lane has nothing left to run. Real SQLite, a real model
and the numpy runners, in this process."""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app.core import db
from app.core.config import settings
from app.data import runs, storage
from app.data.orm import BackendRun, Base, InputSet, Run, StoredModel
from workers import jobs
from workers.engine.examples import write_example
from workers.engine.loading import load_artifact
from workers.engine.sequence import Step
from workers.engine.status import BackendStatus


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(settings, "data_dir", tmp_path / "data")
    monkeypatch.setattr(settings, "database_url", f"sqlite:///{tmp_path / 'driftbench.db'}")
    db.engine.cache_clear()
    db.session_factory.cache_clear()
    Base.metadata.create_all(db.engine())
    try:
        yield
    finally:
        # The runners and models the jobs kept were made for this test's data dir.
        jobs.shut_down()
        jobs.runner_pool.cache_clear()
        jobs._artifact.cache_clear()
        db.engine().dispose()
        db.engine.cache_clear()
        db.session_factory.cache_clear()


def queued_run(tmp_path: Path, backends: tuple[str, ...] = ("numpy-f64",)) -> int:
    """A run of `backends` (numpy-f64, the reference, first) on dense10x50, its model and
    inputs stored as uploads are."""
    written = write_example("dense10x50", tmp_path)
    sha256 = "d" * 64
    staged = tmp_path / "staged.keras"
    shutil.copyfile(written, staged)
    storage.store_model(staged, sha256, "keras")  # its folder made as the path is
    [model_input] = load_artifact(written).graph.inputs
    inputs = {model_input.name: np.random.default_rng(0).random((4, 50), dtype=np.float32)}
    with db.session_scope() as session:
        model = StoredModel(
            sha256=sha256,
            name="dense10x50",
            file_format="keras",
            size_bytes=written.stat().st_size,
            architecture="arch",
            architecture_label="arch",
            layers=[],
            backend_support={},
        )
        input_set = InputSet(
            model=model, kind="uniform", shapes={}, sha256=storage.store_inputs(inputs)
        )
        session.add_all([model, input_set])
        session.flush()
        run = Run(
            model_id=model.id,
            input_set_id=input_set.id,
            reference="numpy-f64",
            modes=["accumulated"],
            backend_runs=[BackendRun(backend=backend) for backend in backends],
        )
        session.add(run)
        session.flush()
        return run.id


def status_of(run_id: int, backend: str = "numpy-f64") -> str:
    with db.session_scope() as session:
        return session.scalars(
            select(BackendRun.status).filter_by(run_id=run_id, backend=backend)
        ).one()


def unread(run_id: int) -> None:
    raise AssertionError(f"the plan of run {run_id} was read again")


def test_a_job_sent_the_plan_does_not_read_it(
    database: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = queued_run(tmp_path)
    plan = runs.start_run(run_id)
    assert plan is not None
    monkeypatch.setattr(runs, "load_plan", unread)
    # As a job process receives it from the executor.
    job = pickle.loads(pickle.dumps(jobs.Job(run_id, Step("numpy-f64"), plan=plan)))
    assert jobs.perform(job) == BackendStatus.DONE
    assert status_of(run_id) == BackendStatus.DONE
    stored = storage.load_outputs(storage.outputs_path(run_id, "numpy-f64"))["accumulated"]
    computed = load_artifact(plan.model_path).graph.compute_layers
    assert list(stored) == [layer.name for layer in computed]
    assert all(len(array) == 4 for array in stored.values())
    assert jobs.nothing_left_to_compare(run_id, plan=plan)
    assert jobs.compare_run(run_id, plan=plan)  # the last step: nothing left to compare


def test_a_job_sent_no_plan_reads_it(
    database: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = queued_run(tmp_path)
    assert runs.start_run(run_id) is not None
    read: list[int] = []
    load_plan = runs.load_plan

    def counted(run_id: int) -> runs.RunPlan | None:
        read.append(run_id)
        return load_plan(run_id)

    monkeypatch.setattr(runs, "load_plan", counted)
    assert jobs.perform(jobs.Job(run_id, Step("numpy-f64"))) == BackendStatus.DONE
    assert status_of(run_id) == BackendStatus.DONE
    assert read == [run_id]


@pytest.mark.parametrize("lane_ends", [False, True])
def test_a_job_handing_on_keeps_its_comparison_when_its_lane_ends(
    database: None, tmp_path: Path, lane_ends: bool
) -> None:
    """numpy's job, its reference stored: told to hand on, it returns the step comparing
    it and leaves the backend unfinished; told too that its lane has nothing left, it
    compares itself (outputs this small are portable) and finishes the backend, the
    comparison timed in its record."""
    run_id = queued_run(tmp_path, ("numpy-f64", "numpy"))
    plan = runs.start_run(run_id)
    assert plan is not None
    assert jobs.perform(jobs.Job(run_id, Step("numpy-f64"), plan=plan)) == BackendStatus.DONE
    step = Step("numpy", lane_ends=lane_ends)
    answer = jobs.perform(jobs.Job(run_id, step, hand_on=True, plan=plan))
    with db.session_scope() as session:
        numpy = session.scalars(select(BackendRun).filter_by(run_id=run_id, backend="numpy")).one()
        status, timings = numpy.status, dict(numpy.timings)
    if lane_ends:
        assert answer == BackendStatus.DONE
        assert status == BackendStatus.DONE
        assert timings["compare"] > 0, timings
    else:
        assert answer == Step("numpy", earlier=("numpy-f64",), portable=True)
        assert status != BackendStatus.DONE
        assert "compare" not in timings, timings
