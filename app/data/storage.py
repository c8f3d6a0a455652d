"""The content-addressed data directory: model files, input sets and layer outputs.

Every write goes to a temporary file first and is renamed into place, so a failed
request or a killed job never leaves a half-written file where a reader looks; a
full disk removes that file and raises StorageFull, leaving earlier files as they were.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import shutil
import tempfile
import threading
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import quote

import numpy as np

from app.core.config import MiB, settings
from app.core.errors import StorageFull
from app.data.npz_files import LOCAL_HEADER, LOCAL_SIGNATURE, write_npz


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
    parser says about the file names the file the user sent; without, it is one file
    of the tmp folder (a folder made and removed per file was half the cost of storing a
    small backend's outputs). Every write into the data directory goes through one: a
    full disk raises StorageFull naming `destination` (the file this one is to become)
    or else the staged file, which is removed.
    """
    tmp = _folder("tmp")
    if name is None:
        path = tmp / f"staged-{uuid.uuid4().hex}{suffix}"
        with _reporting_full_disk(destination or tmp):
            # As a plain open makes it (0666 less the umask); mkstemp's would be 0600.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        with _reporting_full_disk(destination or path):
            try:
                yield path
            finally:
                path.unlink(missing_ok=True)
        return
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).stem).lstrip(".")[:100]
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


def _write_staged(target: Path, write: Callable[[Path], None]) -> None:
    with staged_file(".npz", destination=target) as staged:
        write(staged)
        os.replace(staged, target)


def store_inputs(inputs: dict[str, np.ndarray]) -> str:
    """Save an input set's np.savez archive under the sha256 of its bytes; returns the
    sha256."""
    buffer = io.BytesIO()
    np.savez(buffer, **inputs)
    sha256 = hashlib.sha256(buffer.getvalue()).hexdigest()
    target = inputs_path(sha256)
    if not target.exists():
        _write_staged(target, lambda staged: staged.write_bytes(buffer.getbuffer()))
    return sha256


def load_inputs(sha256: str) -> dict[str, np.ndarray]:
    return _read_all(inputs_path(sha256))


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
    arrays = {
        f"{mode}/{layer}": array
        for mode, layers in outputs.items()
        for layer, array in layers.items()
    }
    _write_staged(target, lambda staged: write_npz(staged, arrays))
    return target


def load_outputs(path: Path) -> dict[str, dict[str, np.ndarray]]:
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for key, array in _read_all(path).items():
        mode, layer = key.split("/", 1)
        outputs.setdefault(mode, {})[layer] = array
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


# A run's comparisons each read the reference's layers and every stored file's index:
# every process that compares (job processes, the server for external uploads) keeps
# what it read lately, so a small model's run reads each file from disk once; a big
# model's layers are over the budget and read each time, as before.
KEPT_LAYER_BYTES = 16 * MiB
_kept_layers = _Kept(KEPT_LAYER_BYTES, lambda array: int(array.nbytes))
_kept_indexes = _Kept(256, lambda index: 1)
_NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


@dataclass(frozen=True)
class _Member:
    """One array of an `.npz` as it lies in the file: where its data starts, what it holds."""

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool

    def read(self, stream: BinaryIO) -> np.ndarray:
        """The array, read at its offset straight into its own memory (`os.preadv`: no
        shared file position, so threads may read one open file at once; one call reads
        at most 2 GiB on Linux)."""
        array = np.empty(self.shape[::-1] if self.fortran_order else self.shape, self.dtype)
        memory = array.reshape(-1).view(np.uint8)
        done = 0
        while done < memory.size:
            read = os.preadv(stream.fileno(), [memory[done:]], self.offset + done)
            if read == 0:
                raise ValueError(f"{getattr(stream, 'name', 'archive')} is truncated")
            done += read
        return array.T if self.fortran_order else array


_Index = dict[str, _Member]


# Bytes read at once for a member's headers: its zip local header, name and extra field
# and its whole .npy header, for any layer's shape (a longer one is read again whole).
_HEADERS_READ = 512
_NPY_PREFIX = len(np.lib.format.MAGIC_PREFIX) + 2  # the magic string, then the version


@lru_cache(maxsize=256)
def _parsed_npy_header(
    version: tuple[int, int], header: bytes
) -> tuple[tuple[int, ...], bool, Any]:
    """A .npy header's shape, memory order and dtype, parsed once per distinct header: the
    headers repeat from file to file (a model's layers have the same shapes every run),
    and numpy parses each with ast.literal_eval."""
    shape, fortran_order, dtype = _NPY_HEADERS[version](io.BytesIO(header))
    return tuple(shape), bool(fortran_order), dtype


def _member(stream: BinaryIO, info: zipfile.ZipInfo, name: str) -> _Member:
    """Where one member's data lies and what it holds, from one read of its headers: a
    dense10x50 backend's file (10 layers) took 0.25 ms to index a header at a time
    through the stream and numpy's header reader, 0.06 ms this way (a 2-core AMD EPYC,
    Zen 5); each process that compares a run indexes each backend's file once."""
    start = info.header_offset
    where = f"{name}[{info.filename}]"
    head = os.pread(stream.fileno(), _HEADERS_READ, start)
    if len(head) < LOCAL_HEADER.size:
        raise ValueError(f"{where}: the archive ends in its header")
    signature, *_, name_bytes, extra_bytes = LOCAL_HEADER.unpack_from(head)
    if signature != LOCAL_SIGNATURE:
        raise ValueError(f"{where}: not a zip member's header")
    npy = LOCAL_HEADER.size + name_bytes + extra_bytes
    if len(head) < npy + _NPY_PREFIX + 4:
        head = os.pread(stream.fileno(), npy + _NPY_PREFIX + 4, start)
    prefix = head[npy : npy + _NPY_PREFIX]
    version = (prefix[-2], prefix[-1]) if len(prefix) == _NPY_PREFIX else None
    if not prefix.startswith(np.lib.format.MAGIC_PREFIX) or version not in _NPY_HEADERS:
        raise ValueError(f"{where}: not a .npy of format version 1.0 or 2.0")
    length_bytes = 2 if version == (1, 0) else 4
    length_at = npy + _NPY_PREFIX
    end = (
        length_at
        + length_bytes
        + int.from_bytes(head[length_at : length_at + length_bytes], "little")
    )
    if len(head) < end:
        head = os.pread(stream.fileno(), end, start)
        if len(head) < end:
            raise ValueError(f"{where}: the archive ends in its .npy header")
    shape, fortran_order, dtype = _parsed_npy_header(version, head[length_at:end])
    data_bytes = info.file_size - (end - npy)
    if dtype.hasobject or math.prod(shape) * dtype.itemsize != data_bytes:
        raise ValueError(f"{where}: its .npy header does not match its data")
    return _Member(start + end, shape, dtype, fortran_order)


def _index_of(stream: BinaryIO, name: str) -> _Index:
    """Where each array of a stored `.npz` lies: from the zip's directory and each
    member's `.npy` header, without reading any data. Every archive here is np.savez's
    (input sets) or written as np.savez writes it (`write_npz`: outputs), its members
    uncompressed."""
    with zipfile.ZipFile(stream) as archive:
        infos = archive.infolist()
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{name}[{info.filename}] is compressed: not a stored archive")
    return {info.filename.removesuffix(".npy"): _member(stream, info, name) for info in infos}


def _kept_index(stream: BinaryIO, name: str) -> _Index:
    identity = _identity(stream)
    index = _kept_indexes.get(identity, "")
    if index is None:
        index = _index_of(stream, name)
        _kept_indexes.put(identity, "", index)
    return cast(_Index, index)


def _read_all(path: Path) -> dict[str, np.ndarray]:
    """Every array of a stored `.npz`, each read at its offset (np.load unzips each
    member through a stream and checks its CRC: 2.3 ms against 0.78 for the outputs of a
    dense10x50 run's backend, 0.2 once their index is kept)."""
    with path.open("rb") as stream:
        return {key: member.read(stream) for key, member in _kept_index(stream, path.name).items()}


def stored_shapes(path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """Each stored array's shape by mode and layer, from the .npy headers alone."""
    with path.open("rb") as stream:
        index = _kept_index(stream, path.name)
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, member in index.items():
        mode, layer = key.split("/", 1)
        shapes.setdefault(mode, {})[layer] = member.shape
    return shapes


class StoredLayers(Mapping[str, np.ndarray]):
    """One mode of a backend run's stored outputs, read a layer at a time on access.

    Comparing a run then holds one layer per backend in memory instead of every
    backend's whole run. The file is opened when this object is made and read from that
    open file, so a re-run replacing it meanwhile does not change what this object
    reads. Arrays read are shared with later readers of the same file: they are read-only.
    """

    def __init__(self, path: Path, mode: str, layers: list[str]) -> None:
        self.path, self.mode, self.layers = path, mode, layers
        self._stream = path.open("rb")
        self._identity = _identity(self._stream)
        # The index is parsed through the stream's one file position.
        self._indexing = threading.Lock()

    def __getitem__(self, layer: str) -> np.ndarray:
        if layer not in self.layers:
            raise KeyError(layer)
        key = f"{self.mode}/{layer}"
        kept = _kept_layers.get(self._identity, key)
        if kept is not None:
            return cast(np.ndarray, kept)
        with self._indexing:
            member = _kept_index(self._stream, self.path.name)[key]
        loaded = member.read(self._stream)
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
    with path.open("rb") as stream:
        member = _kept_index(stream, path.name).get(f"{mode}/{layer}")
        return None if member is None else member.read(stream)


def remove_run_outputs(run_id: int) -> int:
    """Delete every layer output a run stored; returns the bytes they took."""
    folder = data_dir() / "outputs" / str(run_id)
    size = sum(path.stat().st_size for path in folder.glob("*.npz"))
    shutil.rmtree(folder, ignore_errors=True)
    return size
