"""Outputs of an implementation driftbench does not run (a user's numpy or C port, a real
device's browser), uploaded per layer as an `.npz` and compared as backend `ext:<name>`.

An upload is untrusted: it is read without pickle, every key must be a node of the
model, every array numeric and of the shape the reference gave that node, and the
whole file within the size limit; the first problem is reported naming the key.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from workers.engine.errors import InvalidRequest
from workers.engine.inputs import npy_header

EXTERNAL_PREFIX = "ext:"
# What follows 'ext:': a port's own name, or 'probe/<device>/<backend>' for the probe page.
EXTERNAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]{0,99}")
# Kinds of arrays an upload may hold: floats (float16 too), integers and booleans (masks).
NUMERIC_KINDS = frozenset("fiub")


def is_external(backend: str) -> bool:
    return backend.startswith(EXTERNAL_PREFIX)


def external_backend(name: str) -> str:
    """'ext:<name>' for a valid name; the reason otherwise."""
    name = name.removeprefix(EXTERNAL_PREFIX)
    if not EXTERNAL_NAME.fullmatch(name) or "//" in name or name.endswith("/"):
        raise InvalidRequest(
            f"external name {name!r} must be 1 to 100 characters: letters, digits and "
            "'._/+-', starting with a letter or digit"
        )
    return EXTERNAL_PREFIX + name


def read_external_outputs(
    path: Path, expected: dict[str, tuple[int, ...]], max_bytes: int
) -> dict[str, np.ndarray]:
    """Every array of the upload, keyed by node, checked against `expected` (each node's
    output shape); a subset of the nodes is fine, one array that does not fit refuses
    the whole file. Floats are kept at their precision, so float16 outputs are compared
    as the float16 values they are."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise InvalidRequest("the outputs file is not an .npz archive (np.savez)") from None
    with archive:
        members = archive.infolist()
        unpacked = sum(member.file_size for member in members)
        if unpacked > max_bytes:
            raise InvalidRequest(
                f"the outputs unpack to {unpacked} bytes, over the {max_bytes}-byte limit"
            )
        for member in members:
            key = member.filename.removesuffix(".npy")
            if key not in expected:
                known = ", ".join(list(expected)[:12])
                raise InvalidRequest(
                    f"key {key!r} is no layer of the model (layers: {known}"
                    f"{', ...' if len(expected) > 12 else ''})"
                )
            with archive.open(member) as stream:
                shape, dtype = npy_header(stream, f"outputs[{key!r}]")
            if dtype.kind not in NUMERIC_KINDS or dtype.hasobject:
                raise InvalidRequest(
                    f"key {key!r} holds {dtype} values; outputs must be numeric (float16/32/64)"
                )
            if shape != expected[key]:
                raise InvalidRequest(
                    f"key {key!r} has shape {shape}; layer {key!r} outputs {expected[key]}"
                )
        if not members:
            raise InvalidRequest("the outputs file holds no arrays")
    with np.load(path, allow_pickle=False) as arrays:
        loaded = {}
        for key in arrays.files:
            try:
                loaded[key] = arrays[key]
            except (ValueError, OSError) as error:
                raise InvalidRequest(f"key {key!r} cannot be read: {error}") from None
        return loaded
