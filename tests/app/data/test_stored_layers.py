"""A comparison reads stored outputs through StoredLayers: each read gives the stored
values, what the process keeps stays under its budget, a re-run replacing the file does
not change what an open comparison reads, and a later reader of the replaced file gets
its new contents, never the kept old ones."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.data import storage
from app.data.storage import KEPT_LAYER_BYTES, StoredLayers, stored_shapes


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as stream:
        np.savez(stream, **{f"accumulated/{name}": array for name, array in arrays.items()})


def test_reads_are_the_stored_values_and_what_is_kept_stays_under_budget(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # Three layers of 6 MiB each: two fit in the budget, the third evicts the oldest.
    side = int(np.sqrt(6 * 2**20 / 4))
    arrays = {name: rng.standard_normal((side, side), dtype=np.float32) for name in "abc"}
    arrays["dense/1"] = rng.standard_normal((3, 4), dtype=np.float32)
    path = tmp_path / "keras-cpu.npz"
    _write(path, arrays)
    stored = StoredLayers(path, "accumulated", list(arrays))
    for _ in range(2):
        for name in ["a", "b", "c", "a", "dense/1", "b"]:
            np.testing.assert_array_equal(stored[name], arrays[name])
            kept = storage._kept_layers._items.values()
            assert sum(a.nbytes for a in kept) <= KEPT_LAYER_BYTES
    assert "missing" not in stored
    with pytest.raises(KeyError, match="missing"):
        stored["missing"]


def test_a_file_replaced_meanwhile_does_not_change_an_open_read(tmp_path: Path) -> None:
    path = tmp_path / "numpy.npz"
    first = {"x": np.arange(6, dtype=np.float32), "y": np.ones(4, dtype=np.float32)}
    _write(path, first)
    stored = StoredLayers(path, "accumulated", ["x", "y"])
    np.testing.assert_array_equal(stored["x"], first["x"])
    staged = tmp_path / "staged.npz"
    _write(staged, {"x": -first["x"], "y": -first["y"]})
    staged.replace(path)
    np.testing.assert_array_equal(stored["y"], first["y"])


def test_a_replaced_file_is_read_anew_by_later_readers(tmp_path: Path) -> None:
    """What a process keeps is tied to the file as it was: a re-run's new outputs (even of
    the same size, with other shapes) are what the next comparison reads."""
    path = tmp_path / "tfjs-cpu.npz"
    first = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    _write(path, first)
    np.testing.assert_array_equal(StoredLayers(path, "accumulated", ["x"])["x"], first["x"])
    assert stored_shapes(path) == {"accumulated": {"x": (2, 3)}}
    staged = tmp_path / "staged.npz"
    second = {"x": np.arange(6, dtype=np.float32).reshape(3, 2) * 2}
    _write(staged, second)
    staged.replace(path)
    assert stored_shapes(path) == {"accumulated": {"x": (3, 2)}}
    again = StoredLayers(path, "accumulated", ["x"])["x"]
    np.testing.assert_array_equal(again, second["x"])
    assert not again.flags.writeable  # shared with later readers: nobody may change it


def test_every_array_reads_as_np_load_reads_it(tmp_path: Path) -> None:
    """Stored arrays are read at their offsets in the archive, not through np.load: every
    dtype, shape and memory order np.savez writes reads back as np.load gives it."""
    rng = np.random.default_rng(1)
    arrays = {
        "accumulated/f4": rng.standard_normal((5, 7), dtype=np.float32),
        "accumulated/f8": rng.standard_normal((2, 3, 4)),
        "accumulated/fortran": np.asfortranarray(rng.standard_normal((6, 3))),
        "accumulated/ints": rng.integers(-9, 9, (4, 4), dtype=np.int64),
        "accumulated/scalar": np.float32(2.5),
        "accumulated/empty": np.zeros((0, 3), np.float32),
        "isolated/x": rng.standard_normal(9).astype(">f4"),
        # A .npy header longer than the first read of a member's headers.
        "isolated/records": np.arange(60, dtype=np.float32).view(
            [(f"a_long_field_name_{i:02d}", "<f4") for i in range(30)]
        ),
    }
    path = tmp_path / "mixed.npz"
    with path.open("wb") as stream:
        np.savez(stream, **arrays)
    with np.load(path) as archive:
        expected = {key: archive[key] for key in archive.files}
    loaded = storage.load_outputs(path)
    got = {f"{mode}/{layer}": a for mode, layers in loaded.items() for layer, a in layers.items()}
    assert got.keys() == expected.keys()
    for key, array in expected.items():
        assert got[key].dtype == array.dtype and got[key].shape == array.shape, key
        np.testing.assert_array_equal(got[key], array)
    assert got["accumulated/fortran"].flags.f_contiguous
    assert stored_shapes(path)["accumulated"]["f8"] == (2, 3, 4)
    layers = StoredLayers(path, "accumulated", list(loaded["accumulated"]))
    np.testing.assert_array_equal(layers["ints"], expected["accumulated/ints"])
    assert storage.load_layer_output(path, "isolated", "x").dtype == np.dtype(">f4")
    assert storage.load_layer_output(path, "isolated", "missing") is None
    header = io.BytesIO()
    records = np.lib.format.header_data_from_array_1_0(arrays["isolated/records"])
    np.lib.format.write_array_header_1_0(header, records)
    assert len(header.getvalue()) > storage._HEADERS_READ  # its header was read again whole


def test_an_archive_not_as_stored_is_refused_by_name(tmp_path: Path) -> None:
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, x=np.ones(3))
    with pytest.raises(ValueError, match=r"compressed.npz\[x.npy\] is compressed"):
        storage.load_outputs(compressed)
    lying = tmp_path / "lying.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (1000,)}
    )
    with zipfile.ZipFile(lying, "w") as archive:
        archive.writestr("accumulated/x.npy", header.getvalue() + bytes(80))
    with pytest.raises(
        ValueError, match=r"lying.npz\[accumulated/x.npy\]: its .npy header does not"
    ):
        storage.load_outputs(lying)
    text = tmp_path / "text.npz"
    with zipfile.ZipFile(text, "w") as archive:
        archive.writestr("accumulated/x.npy", "not an array")
    with pytest.raises(ValueError, match=r"text.npz\[accumulated/x.npy\]: not a .npy"):
        storage.load_outputs(text)


def test_a_staged_file_is_made_as_open_makes_it_and_removed_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored files are readable as any file the process writes (a worker of another
    user, a backup); a write that fails leaves nothing in the tmp folder."""
    monkeypatch.setattr(storage.settings, "data_dir", tmp_path / "data")
    umask = os.umask(0o022)
    os.umask(umask)
    with pytest.raises(RuntimeError, match="half written"), storage.staged_file(".npz") as staged:
        assert staged.stat().st_mode & 0o777 == 0o666 & ~umask
        staged.write_bytes(b"half")
        raise RuntimeError("half written")
    assert not staged.exists()
    assert list((tmp_path / "data" / "tmp").iterdir()) == []
