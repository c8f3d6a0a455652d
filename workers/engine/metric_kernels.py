"""The per-element work of a comparison, compiled (numba): one pass per row for the sums,
extremes, ULP distances and differing count, one more for the histogram once its range
is known, and the percentiles' rank selection. In numpy each metric was its own pass
over the row with its own temporaries, and numpy's partition slows down 20 to 40 times
on rows that one value fills (zeros where backends agree): ten 256x50 layers took
11 ms, and comparing and diagnosing keras-cpu on cifar_cnn spent 134 of its 200 ms in
partition.

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


# Values drawn from a row's range to bracket the rank wanted; the bracket is this many
# draws either side of where the rank falls among them.
SAMPLE = 64
BRACKET = 6
# A range this short is sorted instead.
SHORT = 32


@njit(cache=True, nogil=True)
def _insertion_sort(values: np.ndarray, low: int, high: int) -> None:
    """values[low:high] sorted in place: for the few values left (numba compiles its own
    np.sort for 3 s per dtype; this takes 0.1 s)."""
    for i in range(low + 1, high):
        value = values[i]
        j = i - 1
        while j >= low and values[j] > value:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = value


@njit(cache=True, nogil=True)
def _select(values: np.ndarray, low: int, high: int, rank: int) -> None:
    """Reorders values[low:high] (ranks low to high - 1 of the row) so that values[rank]
    holds that rank, by Floyd and Rivest's idea: a sorted sample's values either side
    of the rank split the range into below, between and above, in one pass, and only
    the part holding the rank goes on. A pass that leaves all of the range between (few
    distinct values) is followed by one split at a single sampled value, which always
    leaves less. One value filling much of the row (zeros where backends agree) ends it
    early: numpy's partition slows down 20 to 40 times on such rows. Pseudo-random
    draws from a fixed seed: the same input, the same work."""
    state = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(high - low)
    sample = np.empty(SAMPLE, values.dtype)
    narrow = False
    while high - low > SHORT:
        span = high - low
        for k in range(SAMPLE):
            state = state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
            sample[k] = values[low + np.int64((state >> np.uint64(33)) % np.uint64(span))]
        _insertion_sort(sample, 0, SAMPLE)
        at = (rank - low) * SAMPLE // span
        bracket = 0 if narrow else BRACKET
        below = sample[max(at - bracket, 0)]
        above = sample[min(at + bracket, SAMPLE - 1)]
        start, i, end = low, low, high
        while i < end:
            value = values[i]
            if value < below:
                values[i] = values[start]
                values[start] = value
                start += 1
                i += 1
            elif value > above:
                end -= 1
                values[i] = values[end]
                values[end] = value
            else:
                i += 1
        narrow = False
        if rank < start:
            high = start
        elif rank >= end:
            low = end
        elif below == above:
            return
        else:
            narrow = start == low and end == high
            low, high = start, end
    _insertion_sort(values, low, high)


@njit(cache=True, nogil=True)
def rank_values(rows: np.ndarray, ranks: np.ndarray, found: np.ndarray) -> None:
    """Each row's values at `ranks` (ascending, distinct) of its sorted order into
    `found`, reordering `rows`. A rank just above one selected is the least of what lies
    above it: a minimum, not another selection (a percentile lies between two ranks)."""
    count, size = rows.shape
    for row in range(count):
        values = rows[row]
        low = 0  # what lies before `low` is below every rank left
        for j in range(ranks.size):
            rank = ranks[j]
            if rank == low and low > 0:
                least = values[low]
                for i in range(low + 1, size):
                    least = min(least, values[i])
                found[row, j] = least
                continue
            _select(values, low, size, rank)
            found[row, j] = values[rank]
            low = rank + 1
