"""Accepting a model file: size limit, format by content, parsing in a child process.

Nothing is stored until the file has been parsed and judged safe; the same bytes
uploaded twice return the model already stored.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import storage
from app.config import settings
from app.errors import ApiError
from app.models import Model
from workers.model_inspection import ModelInspector
from workers.model_loading import detect_format

CHUNK = 1 << 20


def copy_limited(source: BinaryIO, target: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as stream:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > settings.max_upload_bytes:
                raise ApiError(
                    413,
                    f"upload is larger than the {settings.max_upload_bytes}-byte "
                    "limit (DRIFTBENCH_MAX_UPLOAD_BYTES)",
                )
            digest.update(chunk)
            stream.write(chunk)
    return digest.hexdigest(), size


def create_model(
    session: Session,
    inspector: ModelInspector,
    upload: BinaryIO,
    filename: str,
    name: str | None,
    tags: list[str],
) -> tuple[Model, bool]:
    """Store a new model, or return the existing one with the same sha256 (created=False)."""
    with storage.staged_file() as staged:
        sha256, size = copy_limited(upload, staged)
        existing = session.scalars(select(Model).filter_by(sha256=sha256)).first()
        if existing is not None:
            return existing, False
        session.rollback()  # hand the connection back to the pool while the file is parsed
        with staged.open("rb") as stream:
            file_format = detect_format(stream.read(8))
        if file_format is None:
            raise ApiError(
                415,
                f"{filename!r} is not a Keras model: expected a .keras zip "
                "archive or an .h5 HDF5 file",
            )
        with storage.staged_file(f".{file_format}", filename) as named:
            shutil.copyfile(staged, named)
            summary = inspector.inspect(named, settings.inspect_timeout_s, key=sha256)
            model = Model(
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
        return session.scalars(select(Model).filter_by(sha256=sha256)).one(), False
    return model, True
