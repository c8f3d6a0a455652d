"""A comparison reads stored outputs through StoredLayers: each read gives the stored
values, what the process keeps stays under its budget, a re-run replacing the file does
not change what an open comparison reads, and a later reader of the replaced file gets
its new contents, never the kept old ones."""

from __future__ import annotations

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
