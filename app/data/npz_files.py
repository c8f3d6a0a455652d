"""Writing `.npz` archives as np.savez does (each array an uncompressed `.npy` member of
a zip), in one system call.

np.savez opens, writes and seeks back to patch each member through zipfile: about 60
us of Python a member, so 21 float32 arrays of 256 x 50 (dense10x50's layers at batch
256, 1 MB) took 2.4 ms to store against 1.1 ms this way (an Intel Xeon). Every
backend's outputs are stored on a run's critical path, between one TF.js page and the
next. Archives where zipfile would write zip64 records (over 2 GiB, 65,535 members or
more) and arrays of objects go through np.savez itself.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# A member's local header (app/data/storage.py reads it back: its last two fields are the
# lengths of the name and extra field that come before the data).
LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
LOCAL_SIGNATURE = 0x04034B50
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_CENTRAL_SIGNATURE, _END_SIGNATURE = 0x02014B50, 0x06054B50
_VERSION = 20  # 2.0: stored members, no zip64
_UTF8_NAME = 0x800
_FILE_MODE = 0o644 << 16  # a regular file's permissions, as unzip restores them
# Where zipfile turns to zip64 records (some readers take the 32-bit fields as signed,
# and 0xFFFF members means "see the zip64 record"), so does this writer, to np.savez.
ZIP32_BYTES = (1 << 31) - 1
ZIP32_MEMBERS = 0xFFFF
# Buffers os.writev takes at once (Linux's IOV_MAX).
_IOV_MAX = 1024


def _npy_header(array: np.ndarray) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.getvalue()


def _dos_time() -> tuple[int, int]:
    now = time.localtime()
    return (
        now.tm_hour << 11 | now.tm_min << 5 | now.tm_sec // 2,
        (now.tm_year - 1980) << 9 | now.tm_mon << 5 | now.tm_mday,
    )


def _parts(arrays: Mapping[str, np.ndarray]) -> list[bytes | memoryview] | None:
    """The archive's bytes in order, the arrays' data not copied; None where the plain
    zip format or a `.npy` header of version 1.0 cannot hold them."""
    if len(arrays) >= ZIP32_MEMBERS:
        return None
    clock, date = _dos_time()
    parts: list[bytes | memoryview] = []
    directory = []
    offset = 0
    for key, value in arrays.items():
        array = np.asarray(value, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
        if array.dtype.hasobject:
            return None
        try:
            header = _npy_header(array)
        except ValueError:  # a header beyond version 1.0's 64 KiB
            return None
        data = memoryview(array.reshape(-1).view(np.uint8))
        name = f"{key}.npy"
        flags = 0 if name.isascii() else _UTF8_NAME
        encoded = name.encode()
        size = len(header) + data.nbytes
        crc = zlib.crc32(data, zlib.crc32(header))
        local = LOCAL_HEADER.pack(
            LOCAL_SIGNATURE, _VERSION, flags, 0, clock, date, crc, size, size, len(encoded), 0
        )
        if offset + len(local) + len(encoded) + size > ZIP32_BYTES:
            return None
        directory.append(
            _CENTRAL.pack(
                _CENTRAL_SIGNATURE,
                _VERSION,
                _VERSION,
                flags,
                0,
                clock,
                date,
                crc,
                size,
                size,
                len(encoded),
                0,
                0,
                0,
                0,
                _FILE_MODE,
                offset,
            )
            + encoded
        )
        parts += [local, encoded, header, data]
        offset += len(local) + len(encoded) + size
    central = b"".join(directory)
    if offset + len(central) > ZIP32_BYTES:
        return None
    end = _END.pack(_END_SIGNATURE, 0, 0, len(directory), len(directory), len(central), offset, 0)
    return [*parts, central, end]


def _write_all(path: Path, parts: Sequence[bytes | memoryview]) -> None:
    """Write the parts as the file's whole contents. Opened without O_TRUNC and cut to
    length after: on ext4 (auto_da_alloc), truncating a file to zero marks it to be
    flushed when closed, so closing a staged file that was made empty and opened with
    O_TRUNC started its writeback in `close` itself, on the run's critical path."""
    pending = [memoryview(part).cast("B") for part in parts]
    total = sum(part.nbytes for part in pending)
    first = 0  # the first part not written whole
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        while first < len(pending):
            written = os.writev(descriptor, pending[first : first + _IOV_MAX])
            while first < len(pending) and written >= pending[first].nbytes:
                written -= pending[first].nbytes
                first += 1
            if written:
                pending[first] = pending[first][written:]
        os.ftruncate(descriptor, total)
    finally:
        os.close(descriptor)


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """`np.savez(path, **arrays)`: the same archive, as np.load and zipfile read it."""
    parts = _parts(arrays)
    if parts is None:
        with path.open("wb") as stream:
            np.savez(stream, **arrays)
        return
    _write_all(path, parts)
