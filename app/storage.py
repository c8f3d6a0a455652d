"""The content-addressed data directory: model files, input sets and layer outputs.

Every write goes to a temporary file first and is renamed into place, so a failed
request or a killed job never leaves a half-written file where a reader looks.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from app.config import settings


def data_dir() -> Path:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir.resolve()


def _folder(name: str) -> Path:
    folder = data_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def staged_file(suffix: str = "") -> Iterator[Path]:
    """A temporary file inside the data directory (same filesystem: renames are atomic)."""
    handle, name = tempfile.mkstemp(suffix=suffix, dir=_folder("tmp"))
    os.close(handle)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def model_path(sha256: str, file_format: str) -> Path:
    return _folder("models") / f"{sha256}.{file_format}"


def store_model(staged: Path, sha256: str, file_format: str) -> Path:
    target = model_path(sha256, file_format)
    os.replace(staged, target)
    return target


def inputs_path(sha256: str) -> Path:
    return _folder("inputs") / f"{sha256}.npz"


def _write_npz(target: Path, arrays: dict[str, np.ndarray]) -> None:
    with staged_file(".npz") as staged:
        with staged.open("wb") as stream:
            np.savez(stream, **arrays)
        os.replace(staged, target)


def store_inputs(inputs: dict[str, np.ndarray]) -> str:
    """Save an input set under the sha256 of its bytes; returns the sha256."""
    buffer = io.BytesIO()
    np.savez(buffer, **inputs)
    sha256 = hashlib.sha256(buffer.getvalue()).hexdigest()
    target = inputs_path(sha256)
    if not target.exists():
        _write_npz(target, inputs)
    return sha256


def load_inputs(sha256: str) -> dict[str, np.ndarray]:
    with np.load(inputs_path(sha256), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def outputs_path(run_id: int, backend: str) -> Path:
    return _folder(f"outputs/{run_id}") / f"{backend}.npz"


def store_outputs(run_id: int, backend: str, outputs: dict[str, dict[str, np.ndarray]]) -> Path:
    """Layer outputs keyed '<mode>/<layer>'; replaces what an earlier attempt stored."""
    target = outputs_path(run_id, backend)
    _write_npz(
        target,
        {
            f"{mode}/{layer}": array
            for mode, layers in outputs.items()
            for layer, array in layers.items()
        },
    )
    return target


def load_outputs(path: Path) -> dict[str, dict[str, np.ndarray]]:
    outputs: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as archive:
        for key in archive.files:
            mode, layer = key.split("/", 1)
            outputs.setdefault(mode, {})[layer] = archive[key]
    return outputs


def load_layer_output(path: Path, mode: str, layer: str) -> np.ndarray | None:
    with np.load(path, allow_pickle=False) as archive:
        key = f"{mode}/{layer}"
        return archive[key] if key in archive.files else None


def remove_run_outputs(run_id: int) -> None:
    shutil.rmtree(data_dir() / "outputs" / str(run_id), ignore_errors=True)
