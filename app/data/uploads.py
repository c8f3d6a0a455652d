"""Models and their input sets in the database and the data directory.

An uploaded model file is limited in size, recognised by its content and parsed in
a child process; nothing is stored until it has been parsed and judged safe, and the
same bytes uploaded twice return the model already stored.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.config import settings
from app.core.errors import Conflict, NotFound, TooLarge, UnsupportedFile
from app.data import drift_cache, storage
from app.data.orm import InputSet, Run, StoredModel
from app.data.pages import page
from workers.engine.loading import detect_format
from workers.engine.status import RunStatus
from workers.inspection import ModelInspector

CHUNK = 1 << 20


def copy_limited(source: BinaryIO, target: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as stream:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > settings.max_upload_bytes:
                raise TooLarge(
                    f"upload is larger than the {settings.max_upload_bytes}-byte "
                    "limit (DRIFTBENCH_MAX_UPLOAD_BYTES)",
                )
            digest.update(chunk)
            stream.write(chunk)
    return digest.hexdigest(), size


def create_model(
    session: Session,
    *,
    inspector: ModelInspector,
    upload: BinaryIO,
    filename: str,
    name: str | None,
    tags: list[str],
) -> tuple[StoredModel, bool]:
    """Store a new model, or return the existing one with the same sha256 (created=False)."""
    with storage.staged_file() as staged:
        sha256, size = copy_limited(upload, staged)
        existing = session.scalars(select(StoredModel).filter_by(sha256=sha256)).first()
        if existing is not None:
            return existing, False
        session.rollback()  # hand the connection back to the pool while the file is parsed
        with staged.open("rb") as stream:
            file_format = detect_format(stream.read(8))
        if file_format is None:
            raise UnsupportedFile(
                f"{filename!r} is not a Keras model: expected a .keras zip "
                "archive or an .h5 HDF5 file",
            )
        with storage.staged_file(f".{file_format}", filename) as named:
            shutil.copyfile(staged, named)
            summary = inspector.inspect(named, settings.inspect_timeout_s, key=sha256)
            model = StoredModel(
                sha256=sha256,
                name=name or Path(filename).stem or summary["name"],
                tags=tags,
                file_format=file_format,
                size_bytes=size,
                architecture=summary["architecture"],
                architecture_label=summary["architecture_label"],
                layers=summary["layers"],
                backend_support=summary["backend_support"],
            )
            storage.store_model(named, sha256, file_format)
    session.add(model)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return session.scalars(select(StoredModel).filter_by(sha256=sha256)).one(), False
    return model, True


def list_models(session: Session, *, skip: int, limit: int) -> tuple[int, list[StoredModel]]:
    return page(session, select(StoredModel), order_by=StoredModel.id, skip=skip, limit=limit)


def get_model(session: Session, model_id: int) -> StoredModel:
    model = session.get(StoredModel, model_id)
    if model is None:
        raise NotFound("model", model_id)
    return model


def delete_model(session: Session, *, model_id: int) -> None:
    """Removes the model, its input sets, runs, results and their files."""
    model = get_model(session, model_id)
    runs = session.scalars(select(Run).filter_by(model_id=model_id)).all()
    if any(not RunStatus(run.status).is_final for run in runs):
        raise Conflict(f"model {model_id} has runs in progress; delete it when they finish")
    run_ids = [run.id for run in runs]
    path = storage.model_path(model.sha256, model.file_format)
    drift_cache.bump(session, model.id, model.architecture)
    session.delete(model)
    session.commit()
    path.unlink(missing_ok=True)
    for run_id in run_ids:
        storage.remove_run_outputs(run_id)


def input_shapes(model: StoredModel) -> dict[str, tuple[int | None, ...]]:
    return {
        layer["name"]: tuple(layer["output_shape"])
        for layer in model.layers
        if layer["class_name"] == "InputLayer"
    }


def input_dtypes(model: StoredModel) -> dict[str, str]:
    """Models stored before dtypes were recorded took float32 inputs only."""
    return {
        layer["name"]: layer.get("dtype", "float32")
        for layer in model.layers
        if layer["class_name"] == "InputLayer"
    }


def create_input_set(
    session: Session,
    *,
    model: StoredModel,
    kind: str,
    params: dict[str, Any],
    inputs: dict[str, np.ndarray],
) -> InputSet:
    input_set = InputSet(
        model_id=model.id,
        kind=kind,
        params=params,
        shapes={name: list(array.shape) for name, array in inputs.items()},
        nonfinite=int(sum(np.count_nonzero(~np.isfinite(a)) for a in inputs.values())),
        sha256=storage.store_inputs(inputs),
    )
    session.add(input_set)
    session.commit()
    return input_set


def get_input_set(session: Session, *, model: StoredModel, input_set_id: int) -> InputSet:
    input_set = session.get(InputSet, input_set_id)
    if input_set is None or input_set.model_id != model.id:
        raise NotFound(f"input set of model {model.id}", input_set_id)
    return input_set
