"""The compiled rank selection against numpy's sort, on the rows that break selections:
one value filling the row, values of one binade, a few values repeated, keys spanning
every bit, rows around the size where a bucket is sorted instead of split."""

import numpy as np
import pytest

from workers.engine.metric_kernels import ranked


def _rows(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    errors = np.abs(rng.standard_normal((3, size))) * 1e-7
    if kind == "errors":
        return errors.view(np.int64)
    if kind == "mostly zeros":
        return np.where(rng.random((3, size)) < 0.9, 0.0, errors).view(np.int64)
    if kind == "one value":
        return np.full((3, size), 3.5e-8).view(np.int64)
    if kind == "one binade":
        return (1.0 + rng.random((3, size))).view(np.int64)
    if kind == "two values":
        return rng.choice(np.array([7, 1 << 40], np.int64), (3, size))
    if kind == "small ints":
        return rng.integers(0, 4, (3, size), dtype=np.int64)
    if kind == "last digit":  # keys that differ only in their lowest 11 bits, mostly 2047
        low_bits = np.where(rng.random((3, size)) < 0.9, 2047, rng.integers(0, 2047, (3, size)))
        return (np.int64(12_345) << 40) | low_bits
    if kind == "every bit":
        return rng.integers(0, np.iinfo(np.int64).max, (3, size), dtype=np.int64)
    raise AssertionError(kind)


KINDS = [
    "errors",
    "mostly zeros",
    "one value",
    "one binade",
    "two values",
    "small ints",
    "last digit",
    "every bit",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [1, 2, 31, 33, 2049, 12_800])
def test_ranked_values_are_numpys_sorted_values(kind: str, size: int) -> None:
    rng = np.random.default_rng(size)
    keys = _rows(kind, size, rng)
    ranks = np.unique(np.array([0, (size - 1) // 2, size // 2, size * 9 // 10, size - 1]))
    out = np.empty((keys.shape[0], ranks.size), np.int64)
    ranked(keys, ranks, out)
    np.testing.assert_array_equal(out, np.sort(keys, axis=1)[:, ranks])


def test_ranked_leaves_its_rows_as_they_were() -> None:
    keys = _rows("errors", 500, np.random.default_rng(1))
    kept = keys.copy()
    ranked(keys, np.array([10, 250, 499]), np.empty((3, 3), np.int64))
    np.testing.assert_array_equal(keys, kept)
