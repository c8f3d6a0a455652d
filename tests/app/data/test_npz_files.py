"""Stored outputs are written by our own zip writer: np.load and zipfile (the readers
users and our other code use) must read every archive it writes as np.savez's, byte
for byte in each array, and what it cannot write in the plain zip format must still
come out as np.savez writes it."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.data import npz_files, storage
from app.data.npz_files import write_npz


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "accumulated/dense": rng.standard_normal((256, 50), dtype=np.float32),
        "accumulated/reference": rng.standard_normal((8, 3, 4)),
        "accumulated/half": rng.standard_normal((5, 7)).astype(np.float16),
        "accumulated/big-endian": np.arange(12, dtype=">f4").reshape(3, 4),
        "accumulated/fortran": np.asfortranarray(rng.standard_normal((6, 5))),
        "accumulated/strided": np.arange(40, dtype=np.float32).reshape(8, 5)[::2, 1:],
        "accumulated/scalar": np.array(2.5, np.float32),
        "accumulated/empty": np.zeros((0, 10), np.float32),
        "accumulated/mask": np.array([[True, False], [False, True]]),
        "accumulated/token ids": np.arange(6, dtype=np.int32).reshape(2, 3),
        "isolated/dénse_ü": rng.standard_normal((2, 3), dtype=np.float32),
    }


def _written_by_np_savez(path: Path) -> bool:
    """np.savez's members carry a zip64 extra field in their local headers; ours none."""
    return int.from_bytes(path.read_bytes()[28:30], "little") > 0


def _assert_reads_back(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every member's CRC matches its bytes
        assert archive.namelist() == [f"{key}.npy" for key in arrays]
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    with np.load(path, allow_pickle=False) as loaded:
        assert list(loaded.keys()) == list(arrays)
        for key, array in arrays.items():
            assert loaded[key].shape == array.shape and loaded[key].dtype == array.dtype, key
            np.testing.assert_array_equal(loaded[key], array, err_msg=key)


def test_every_kind_of_array_reads_back_as_np_load_and_zipfile_read_it(tmp_path: Path) -> None:
    arrays = _arrays()
    path = tmp_path / "outputs.npz"
    write_npz(path, arrays)
    _assert_reads_back(path, arrays)
    assert not _written_by_np_savez(path)
    # The stored outputs' own reader takes it too (each member's data read in place).
    read = storage.load_outputs(path)
    for key, array in arrays.items():
        mode, layer = key.split("/", 1)
        np.testing.assert_array_equal(read[mode][layer], array)


def test_an_archive_beyond_the_plain_zip_format_is_written_by_np_savez(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 65,535 members or 4 GiB, zip64 records are needed: np.savez (through zipfile)
    writes those. The limits are lowered here so the archive stays small."""
    arrays = _arrays()
    monkeypatch.setattr(npz_files, "ZIP32_MEMBERS", len(arrays) - 1)
    path = tmp_path / "many.npz"
    write_npz(path, arrays)
    _assert_reads_back(path, arrays)
    assert _written_by_np_savez(path)
    monkeypatch.setattr(npz_files, "ZIP32_MEMBERS", len(arrays) + 1)
    monkeypatch.setattr(npz_files, "ZIP32_BYTES", 4096)
    write_npz(path, arrays)
    _assert_reads_back(path, arrays)
    assert _written_by_np_savez(path)


def test_an_archive_of_more_parts_than_one_writev_takes(tmp_path: Path) -> None:
    """Each member is four buffers (headers, name, data); Linux takes 1,024 a call."""
    arrays = {f"accumulated/layer_{i}": np.full((2, 3), i, np.float32) for i in range(300)}
    path = tmp_path / "deep.npz"
    write_npz(path, arrays)
    _assert_reads_back(path, arrays)
    assert not _written_by_np_savez(path)


def test_an_archive_written_over_a_longer_file_is_that_archive_alone(tmp_path: Path) -> None:
    """The file is not truncated when opened (workers' staged files are new and empty),
    so whatever was longer before is cut after the write."""
    path = tmp_path / "outputs.npz"
    write_npz(path, _arrays())
    small = {"accumulated/dense": np.arange(6, dtype=np.float32).reshape(2, 3)}
    write_npz(path, small)
    _assert_reads_back(path, small)  # a longer tail would hold the first one's directory
    fresh = tmp_path / "fresh.npz"
    write_npz(fresh, small)
    assert path.stat().st_size == fresh.stat().st_size


def test_an_input_set_is_stored_as_the_bytes_its_name_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.settings, "data_dir", tmp_path / "data")
    inputs = {"image": np.random.default_rng(1).standard_normal((4, 8, 8, 3), dtype=np.float32)}
    sha256 = storage.store_inputs(inputs)
    assert hashlib.sha256(storage.inputs_path(sha256).read_bytes()).hexdigest() == sha256
    np.testing.assert_array_equal(storage.load_inputs(sha256)["image"], inputs["image"])


def test_arrays_of_objects_are_left_to_np_savez_which_pickles_them(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    write_npz(path, {"names": np.array(["a", None], dtype=object)})
    with np.load(path, allow_pickle=True) as loaded:
        assert loaded["names"].tolist() == ["a", None]
