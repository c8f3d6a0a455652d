"""The per-element work of a comparison, compiled (numba): one pass per row for the sums,
extremes, ULP distances and differing count, and one more for the histogram once its
range is known. In numpy each metric was its own pass over the row with its own
temporaries (the percentiles' ranks come from numpy's sort, workers/engine/metrics.py).

Only processes that compare import this (numba's import costs 0.25 s); the compiled code
is cached on disk (`cache=True`: next to this module, or in a per-user folder where this
one is read-only, or in NUMBA_CACHE_DIR), so a process loads it instead of compiling it
again. Every array passed in is C-ordered and writable: numba compiles a kernel anew
for each layout and for read-only arrays.
Sums are vectorised (reassociated), not pairwise as numpy's are: they can differ from
numpy's in the last digits (about 1e-14 relative on 100,000 values).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# The row's results, in `row_passes`'s output columns.
SUM_ABS, MAX_ABS, MAX_REL, SQUARED_ERROR, SQUARED_REFERENCE, SQUARED_CANDIDATE, DOT = range(7)
FLOAT_COLUMNS = 7
N_DIFF, MAX_ULP = range(2)
INT_COLUMNS = 2


# The sums may be vectorised: reassociated, a zero's sign ignored. Not "no NaN" or "no
# Inf": the rows are finite (the caller measures NaN and Inf apart), but a square, a
# product or a difference of finite values may still overflow, and Inf - Inf is NaN. No
# contraction into fused multiply-adds and no approximate division: each element's
# error and relative error are computed as numpy computes them.
REDUCTIONS = {"nsz", "reassoc"}


@njit(cache=True, nogil=True, fastmath=REDUCTIONS)
def row_passes(
    candidate: np.ndarray,
    reference: np.ndarray,
    candidate_bits: np.ndarray,
    reference_bits: np.ndarray,
    at_float32: bool,
    tiny: float,
    abs_errors: np.ndarray,
    ulps: np.ndarray,
    floats: np.ndarray,
    ints: np.ndarray,
) -> None:
    """Each row's sums and extremes into `floats` and `ints`, and its absolute errors and
    ULP distances into `abs_errors` and `ulps` (for the percentiles). `candidate` and
    `reference` are finite float64 rows, `*_bits` the same values rounded to float32 as
    int32; `at_float32`: differing means a nonzero ULP distance, else unequal values.

    The ULP distance of two floats of one sign is the difference of their bits; across
    signs it is the sum of their magnitudes' bits (so -0.0 and +0.0 are the same point)."""
    rows, size = candidate.shape
    for row in range(rows):
        sum_abs = max_abs = max_rel = 0.0
        squared_error = squared_reference = squared_candidate = dot = 0.0
        n_diff = max_ulp = 0
        for i in range(size):
            c, r = candidate[row, i], reference[row, i]
            error = c - r
            absolute = abs(error)
            abs_errors[row, i] = absolute
            sum_abs += absolute
            max_abs = max(max_abs, absolute)
            max_rel = max(max_rel, absolute / max(abs(r), tiny))
            squared_error += error * error
            squared_reference += r * r
            squared_candidate += c * c
            dot += c * r
            bits_c, bits_r = np.int64(candidate_bits[row, i]), np.int64(reference_bits[row, i])
            apart = abs(bits_c - bits_r)
            across = (bits_c & 0x7FFFFFFF) + (bits_r & 0x7FFFFFFF)
            distance = across if (bits_c ^ bits_r) < 0 else apart
            ulps[row, i] = distance
            max_ulp = max(max_ulp, distance)
            n_diff += (distance != 0) if at_float32 else (c != r)
        floats[row, SUM_ABS] = sum_abs
        floats[row, MAX_ABS] = max_abs
        floats[row, MAX_REL] = max_rel
        floats[row, SQUARED_ERROR] = squared_error
        floats[row, SQUARED_REFERENCE] = squared_reference
        floats[row, SQUARED_CANDIDATE] = squared_candidate
        floats[row, DOT] = dot
        ints[row, N_DIFF] = n_diff
        ints[row, MAX_ULP] = max_ulp


@njit(cache=True, nogil=True)
def histograms(
    candidate: np.ndarray,
    reference: np.ndarray,
    bounds: np.ndarray,
    edges: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Each row's errors binned over its `edges` (np.linspace over -bound..bound, every
    error within it) as `np.histogram` bins them: by its index arithmetic, then its
    corrections where rounding put a value on the wrong side of an edge. Rows whose
    bound is 0 are skipped."""
    rows, size = candidate.shape
    bins = edges.shape[1] - 1
    for row in range(rows):
        if bounds[row] == 0.0:
            continue
        first, last = edges[row, 0], edges[row, bins]
        width = last - first
        for i in range(size):
            error = candidate[row, i] - reference[row, i]
            index = int(((error - first) / width) * bins)
            if index == bins:
                index -= 1
            if error < edges[row, index]:
                index -= 1
            if error >= edges[row, index + 1] and index != bins - 1:
                index += 1
            # Never written outside the counts (numba checks no bounds), whatever the
            # caller passed.
            counts[row, min(max(index, 0), bins - 1)] += 1
