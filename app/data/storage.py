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
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import numpy as np

from app.core.config import MiB, settings
from app.core.errors import StorageFull
from workers.engine.inputs import npy_header


def data_dir() -> Path:
    return _resolved(settings.data_dir)


@lru_cache(maxsize=4)
def _resolved(configured: Path) -> Path:
    """Made and resolved once per configured path: resolving walks every component
    (0.1 ms a call, and a run's jobs ask for their files' paths about a hundred times).
    What writes below it makes its own folders, so a data directory removed meanwhile
    comes back on the next write."""
    configured.mkdir(parents=True, exist_ok=True)
    return configured.resolve()


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


# A stored file as one version of its contents: every write replaces the file (a new
# inode), so an identity never names two different contents.
FileIdentity = tuple[int, int, int, int]


def _identity(stream: BinaryIO) -> FileIdentity:
    status = os.fstat(stream.fileno())
    return (status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)


class _Kept:
    """What this process read of stored files lately, by file identity and key, up to
    `budget` (in `cost` units), least recently used first out; shared by the threads of
    a server."""

    def __init__(self, budget: int, cost: Callable[[Any], int]) -> None:
        self.budget, self.cost = budget, cost
        self._items: OrderedDict[tuple[FileIdentity, str], Any] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get(self, identity: FileIdentity, key: str) -> Any:
        with self._lock:
            found = self._items.get((identity, key))
            if found is not None:
                self._items.move_to_end((identity, key))
            return found

    def put(self, identity: FileIdentity, key: str, value: Any) -> None:
        cost = self.cost(value)
        if cost > self.budget:
            return
        with self._lock:
            replaced = self._items.pop((identity, key), None)
            self._total += cost - (0 if replaced is None else self.cost(replaced))
            self._items[identity, key] = value
            while self._total > self.budget:
                _, dropped = self._items.popitem(last=False)
                self._total -= self.cost(dropped)


# A run's comparisons each read the reference's layers and every stored file's headers:
# every process that compares (job processes, the server for external uploads) keeps
# what it read lately, so a small model's run reads each file from disk once (parsing
# .npz headers was 22 ms of a dense10x50 run's browser jobs); a big model's layers are
# over the budget and read each time, as before.
KEPT_LAYER_BYTES = 16 * MiB
_kept_layers = _Kept(KEPT_LAYER_BYTES, lambda array: int(array.nbytes))
_kept_shapes = _Kept(256, lambda shapes: 1)


def _read_shapes(stream: BinaryIO, name: str) -> dict[str, dict[str, tuple[int, ...]]]:
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    with zipfile.ZipFile(stream) as archive:
        for member_name in archive.namelist():
            with archive.open(member_name) as member:
                shape, _ = npy_header(member, f"{name}[{member_name}]")
            mode, layer = member_name.removesuffix(".npy").split("/", 1)
            shapes.setdefault(mode, {})[layer] = shape
    return shapes


def stored_shapes(path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """Each stored array's shape by mode and layer, from the .npy headers alone."""
    with path.open("rb") as stream:
        identity = _identity(stream)
        shapes = _kept_shapes.get(identity, "")
        if shapes is None:
            shapes = _read_shapes(stream, path.name)
            _kept_shapes.put(identity, "", shapes)
    return {mode: dict(layers) for mode, layers in shapes.items()}


class StoredLayers(Mapping[str, np.ndarray]):
    """One mode of a backend run's stored outputs, read a layer at a time on access.

    Comparing a run then holds one layer per backend in memory instead of every
    backend's whole run. The file is opened when this object is made and read from that
    open file, so a re-run replacing it meanwhile does not change what this object
    reads; the archive's index is parsed on the first read this process has not kept.
    Arrays read are shared with later readers of the same file: they are read-only.
    """

    def __init__(self, path: Path, mode: str, layers: list[str]) -> None:
        self.path, self.mode, self.layers = path, mode, layers
        self._stream = path.open("rb")
        self._identity = _identity(self._stream)
        self._archive: np.lib.npyio.NpzFile | None = None

    def __getitem__(self, layer: str) -> np.ndarray:
        if layer not in self.layers:
            raise KeyError(layer)
        key = f"{self.mode}/{layer}"
        kept = _kept_layers.get(self._identity, key)
        if kept is not None:
            return cast(np.ndarray, kept)
        if self._archive is None:
            self._archive = np.load(self._stream, allow_pickle=False)
        loaded = self._archive[key]
        loaded.flags.writeable = False
        _kept_layers.put(self._identity, key, loaded)
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
