"""The content-addressed data directory: model files, input sets and layer outputs.

Every write goes to a temporary file first and is renamed into place, so a failed
request or a killed job never leaves a half-written file where a reader looks; a
full disk removes that file and raises StorageFull, leaving earlier files as they were.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import numpy as np

from app.core.config import MiB, settings
from app.core.errors import StorageFull
from workers.engine.inputs import npy_header


def data_dir() -> Path:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir.resolve()


def _folder(name: str) -> Path:
    folder = data_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def c_port_dir(sha256: str, version: int) -> Path:
    """The model's generated C port (port.c, port.h) by the generator's `version`, made on
    first request."""
    return data_dir() / "c-ports" / f"v{version}" / sha256


@contextmanager
def _reporting_full_disk(path: Path) -> Iterator[None]:
    """A full disk while writing `path` becomes StorageFull. Callers enter it outside
    their staged file, so the free space it reports is what is left once that is gone."""
    try:
        yield
    except OSError as error:
        if error.errno not in StorageFull.ERRNOS:
            raise
        root = data_dir()
        raise StorageFull(error.errno, path, root, shutil.disk_usage(root).free) from error


@contextmanager
def staged_file(
    suffix: str = "", name: str | None = None, destination: Path | None = None
) -> Iterator[Path]:
    """A temporary file inside the data directory (same filesystem: renames are atomic).

    With `name` the file carries that name, made safe, in a private folder, so what a
    parser says about the file names the file the user sent. Every write into the data
    directory goes through one: a full disk raises StorageFull naming `destination`
    (the file this one is to become) or else the staged file, which is removed.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "").stem).lstrip(".")[:100]
    tmp = _folder("tmp")
    with _reporting_full_disk(destination or tmp):
        folder = Path(tempfile.mkdtemp(dir=tmp))
    path = folder / f"{stem or 'upload'}{suffix}"
    with _reporting_full_disk(destination or path):
        try:
            path.touch()
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def model_path(sha256: str, file_format: str) -> Path:
    return _folder("models") / f"{sha256}.{file_format}"


def store_model(staged: Path, sha256: str, file_format: str) -> Path:
    target = model_path(sha256, file_format)
    os.replace(staged, target)
    return target


def port_dir(sha256: str) -> Path:
    """What a port of the model needs (weights, the TF.js export), made on first request."""
    return data_dir() / "ports" / sha256


@contextmanager
def staged_directory(destination: Path) -> Iterator[Path]:
    """A temporary folder that becomes `destination` when the block succeeds; when another
    request made `destination` first, theirs is kept (the contents are the same)."""
    with _reporting_full_disk(destination):
        folder = Path(tempfile.mkdtemp(dir=_folder("tmp")))
    try:
        with _reporting_full_disk(destination):
            yield folder
            destination.parent.mkdir(parents=True, exist_ok=True)
            if not destination.exists():
                os.replace(folder, destination)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def inputs_path(sha256: str) -> Path:
    return _folder("inputs") / f"{sha256}.npz"


def _write_npz(target: Path, arrays: dict[str, np.ndarray]) -> None:
    with staged_file(".npz", destination=target) as staged:
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
    """Where a backend run's layer outputs are (or would be) stored; creates nothing. An
    external backend's name ('ext:probe/phone/webgl') is percent-encoded into one file
    name."""
    return data_dir() / "outputs" / str(run_id) / f"{quote(backend, safe='')}.npz"


def capped_outputs(
    outputs: dict[str, dict[str, np.ndarray]], max_bytes: int
) -> tuple[dict[str, dict[str, np.ndarray]], str | None]:
    """At most `max_bytes` of outputs: the same first samples of every layer, and a note.

    Every layer keeps the same samples, so each stored sample is still a whole
    forward pass that can be compared layer by layer with another backend's.
    """
    arrays = [array for layers in outputs.values() for array in layers.values()]
    total = sum(array.nbytes for array in arrays)
    if total <= max_bytes or not arrays:
        return outputs, None
    batch = min(array.shape[0] for array in arrays)
    keep = max(1, batch * max_bytes // total)
    capped = {
        mode: {name: a[:keep] for name, a in layers.items()} for mode, layers in outputs.items()
    }
    note = (
        f"outputs capped: stored the first {keep} of {batch} samples, since all "
        f"{total / MiB:.0f} MiB are over DRIFTBENCH_MAX_STORED_OUTPUT_BYTES "
        f"({max_bytes / MiB:.0f} MiB); divergence covers those samples"
    )
    return capped, note


def store_outputs(run_id: int, backend: str, outputs: dict[str, dict[str, np.ndarray]]) -> Path:
    """Layer outputs keyed '<mode>/<layer>'; replaces what an earlier attempt stored."""
    target = outputs_path(run_id, backend)
    with _reporting_full_disk(target):
        target.parent.mkdir(parents=True, exist_ok=True)
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


def stored_shapes(path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """Each stored array's shape by mode and layer, from the .npy headers alone."""
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            with archive.open(name) as member:
                shape, _ = npy_header(member, f"{path.name}[{name}]")
            mode, layer = name.removesuffix(".npy").split("/", 1)
            shapes.setdefault(mode, {})[layer] = shape
    return shapes


# What one StoredLayers keeps of the layers it read (a comparison holds one per backend
# and mode), so that big models' layers are still read one at a time.
KEPT_LAYER_BYTES = 16 * MiB


class StoredLayers(Mapping[str, np.ndarray]):
    """One mode of a backend run's stored outputs, read a layer at a time on access.

    Comparing a run then holds one layer per backend in memory instead of every
    backend's whole run. The archive is opened once, on the first read, and stays open
    while this object lives, and the layers read last are kept up to KEPT_LAYER_BYTES:
    a comparison reads each reference layer once per backend, and re-parsing the zip
    index and the .npy header on every read was most of a small model's comparison
    time. A re-run replacing the file meanwhile does not change what this object reads
    (the open file is the old one).
    """

    def __init__(self, path: Path, mode: str, layers: list[str]) -> None:
        self.path, self.mode, self.layers = path, mode, layers
        self._archive: np.lib.npyio.NpzFile | None = None
        self._kept: dict[str, np.ndarray] = {}

    def __getitem__(self, layer: str) -> np.ndarray:
        if layer in self._kept:
            return self._kept[layer]
        if layer not in self.layers:
            raise KeyError(layer)
        if self._archive is None:
            self._archive = np.load(self.path, allow_pickle=False)
        loaded = self._archive[f"{self.mode}/{layer}"]
        if loaded.nbytes <= KEPT_LAYER_BYTES:
            while sum(a.nbytes for a in self._kept.values()) + loaded.nbytes > KEPT_LAYER_BYTES:
                del self._kept[next(iter(self._kept))]
            self._kept[layer] = loaded
        return loaded

    def __contains__(self, layer: object) -> bool:
        """From the archive's index: a layer a backend did not provide is never read."""
        return layer in self.layers

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)


def load_layer_output(path: Path, mode: str, layer: str) -> np.ndarray | None:
    with np.load(path, allow_pickle=False) as archive:
        key = f"{mode}/{layer}"
        return archive[key] if key in archive.files else None


def remove_run_outputs(run_id: int) -> int:
    """Delete every layer output a run stored; returns the bytes they took."""
    folder = data_dir() / "outputs" / str(run_id)
    size = sum(path.stat().st_size for path in folder.glob("*.npz"))
    shutil.rmtree(folder, ignore_errors=True)
    return size
