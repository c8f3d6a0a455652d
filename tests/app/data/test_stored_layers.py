"""A comparison reads stored outputs through StoredLayers: each read gives the stored
values, what it keeps stays under its budget, and a re-run replacing the file does not
change what an open comparison reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.data.storage import KEPT_LAYER_BYTES, StoredLayers


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
            assert sum(a.nbytes for a in stored._kept.values()) <= KEPT_LAYER_BYTES
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
