"""The per-element work of a comparison, compiled (numba): one vectorised pass per row for
the sums, extremes, ULP distances, differing count and whether anything is not finite,
and one for the argmax agreement, over the outputs as stored (float32 or float64, never
copied to float64: the copies and numpy's own argmax and finiteness passes took a
quarter of the metrics); one more over the errors for the histogram once its range is
known, and a radix selection of the percentiles' ranks. In numpy each metric was its
own pass over the row with its own temporaries.

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
N_DIFF, MAX_ULP, NONFINITE_ERRORS, ARGMAX_AGREE = range(4)
INT_COLUMNS = 4


# The sums may be vectorised: reassociated, a zero's sign ignored. Not "no NaN" or "no
# Inf": a row may hold NaN or Inf (counted, its metrics then measured apart), and a
# square, a product or a difference of finite values may still overflow. No
# contraction into fused multiply-adds and no approximate division: each element's
# error and relative error are computed as numpy computes them.
REDUCTIONS = {"nsz", "reassoc"}


# The bits of +Inf as int64: a non-negative float64 is finite exactly where its bits are
# below these, and two non-negative float64s order as their bits do.
INF_BITS = np.int64(0x7FF0000000000000)
# Interleaved tallies of one histogram: consecutive errors mostly fall in the same few
# bins near 0, and one tally's increments then wait on each other.
_TALLIES = 4


@njit(cache=True, nogil=True, fastmath=REDUCTIONS, error_model="numpy")
def row_passes(
    candidate: np.ndarray,
    reference: np.ndarray,
    at_float32: bool,
    tiny: float,
    last: int,
    errors: np.ndarray,
    ulps: np.ndarray,
    floats: np.ndarray,
    ints: np.ndarray,
) -> None:
    """Each row's sums and extremes into `floats` and `ints`, and its signed errors and
    ULP distances into `errors` and `ulps` (for the histogram and the percentiles).
    `candidate` and `reference` are float32 or float64 rows, read as they are stored:
    no float64 copy of either is made. `at_float32`: differing means a nonzero ULP
    distance, else unequal values. A row whose error is not finite somewhere (a NaN or
    Inf on either side, or an overflow) is counted in NONFINITE_ERRORS and its other
    results are meaningless. With `last` > 0, the rows are runs of `last` values (a
    layer's last axis) and ARGMAX_AGREE counts those whose largest value (the first of
    equals, as np.argmax) sits at the same index on both sides.

    The element loop has no branch and no float maximum (a float max reduction is not
    vectorised without "no NaN"): the largest absolute and relative errors are taken
    over their bits, which order as non-negative floats do, and the argmax runs are a
    loop of their own (0.54 ms where the one loop with the argmax inside took 1.36, 10
    rows of 12,800 values, AMD EPYC). numba's default error model still checked the
    relative error's divisor for zero, to raise Python's ZeroDivisionError: a branch
    that kept LLVM from vectorising the loop at all (only scalar instructions in its
    assembly). The divisor is at least `tiny`, so numpy's error model (IEEE results, no
    check) changes no value, and the loop is vectorised: 0.46 -> 0.15 ms for those rows
    without the argmax runs, 0.63 -> 0.30 with them (Intel Xeon with AVX-512).

    The ULP distance of two floats of one sign is the difference of their bits; across
    signs it is the sum of their magnitudes' bits (so -0.0 and +0.0 are the same point)."""
    rows, size = candidate.shape
    for row in range(rows):
        c_row, r_row = candidate[row], reference[row]
        e_row, u_row = errors[row], ulps[row]
        sum_abs = squared_error = squared_reference = squared_candidate = dot = 0.0
        max_abs_bits = max_rel_bits = max_ulp = n_diff = nonfinite = np.int64(0)
        for i in range(size):
            c, r = np.float64(c_row[i]), np.float64(r_row[i])
            error = c - r
            absolute = abs(error)
            e_row[i] = error
            abs_bits = np.float64(absolute).view(np.int64)
            nonfinite += abs_bits >= INF_BITS
            sum_abs += absolute
            max_abs_bits = max(max_abs_bits, abs_bits)
            relative = absolute / max(abs(r), tiny)
            max_rel_bits = max(max_rel_bits, np.float64(relative).view(np.int64))
            squared_error += error * error
            squared_reference += r * r
            squared_candidate += c * c
            dot += c * r
            bits_c = np.int64(np.float32(c_row[i]).view(np.int32))
            bits_r = np.int64(np.float32(r_row[i]).view(np.int32))
            apart = abs(bits_c - bits_r)
            across = (bits_c & 0x7FFFFFFF) + (bits_r & 0x7FFFFFFF)
            distance = across if (bits_c ^ bits_r) < 0 else apart
            u_row[i] = distance
            max_ulp = max(max_ulp, distance)
            n_diff += (distance != 0) if at_float32 else (c != r)
        agree = 0
        if last > 0:
            for start in range(0, size, last):
                best_c, best_r = c_row[start], r_row[start]
                at_c = at_r = start
                for i in range(start + 1, start + last):
                    if c_row[i] > best_c:
                        best_c, at_c = c_row[i], i
                    if r_row[i] > best_r:
                        best_r, at_r = r_row[i], i
                agree += at_c == at_r
        floats[row, SUM_ABS] = sum_abs
        floats[row, MAX_ABS] = np.int64(max_abs_bits).view(np.float64)
        floats[row, MAX_REL] = np.int64(max_rel_bits).view(np.float64)
        floats[row, SQUARED_ERROR] = squared_error
        floats[row, SQUARED_REFERENCE] = squared_reference
        floats[row, SQUARED_CANDIDATE] = squared_candidate
        floats[row, DOT] = dot
        ints[row, N_DIFF] = n_diff
        ints[row, MAX_ULP] = max_ulp
        ints[row, NONFINITE_ERRORS] = nonfinite
        ints[row, ARGMAX_AGREE] = agree


@njit(cache=True, nogil=True)
def histograms(
    errors: np.ndarray, bounds: np.ndarray, edges: np.ndarray, counts: np.ndarray
) -> None:
    """Each row's signed errors binned over its `edges` (np.linspace over -bound..bound,
    every error within it) as `np.histogram` bins them, then each error replaced by its
    absolute value, in the same pass (what the percentiles rank). Rows whose bound is 0
    are not binned.

    np.histogram estimates a value's bin by its index arithmetic, (value - first) /
    width * bins, then moves it down one where the value lies below that bin's left
    edge and up one where it lies at or past its right edge (except in the last bin,
    closed on the right). The estimate here multiplies by bins / width instead of
    dividing: it lies within one bin of numpy's (both are the floor of nearly the same
    quotient, which differ only where it is within a few rounding errors of a whole
    number: the value lies at an edge), so the same two corrections land both on the
    bin the edges put the value in. The division was most of the pass."""
    rows, size = errors.shape
    bins = edges.shape[1] - 1
    tallies = np.zeros((bins, _TALLIES), np.int64)
    for row in range(rows):
        line = errors[row]
        if bounds[row] == 0.0:
            for i in range(size):
                line[i] = abs(line[i])
            continue
        row_edges = edges[row]
        first = row_edges[0]
        scale = bins / (row_edges[bins] - first)
        tallies[:] = 0
        for i in range(size):
            error = line[i]
            line[i] = abs(error)
            index = min(max(int((error - first) * scale), 0), bins - 1)
            if error < row_edges[index]:
                index -= 1
            if error >= row_edges[index + 1] and index != bins - 1:
                index += 1
            # Never written outside the counts (numba checks no bounds), whatever the
            # caller passed.
            tallies[min(max(index, 0), bins - 1), i & (_TALLIES - 1)] += 1
        for index in range(bins):
            counts[row, index] = tallies[index].sum()


# The ranks' selection splits keys on a digit of this many bits at a time.
_DIGIT_BITS = 11
_DIGITS = 1 << _DIGIT_BITS
# A bucket this small is sorted instead of split again.
_SORTED_BELOW = 32


@njit(cache=True, nogil=True)
def _bit_length(value: np.int64) -> int:
    """Bits up to the highest set one of a non-negative key (64 for a negative one: a
    loop that shifts it right would never end)."""
    for length in range(64):
        if value >> length == 0:
            return length
    return 64


@njit(cache=True, nogil=True)
def _span(keys: np.ndarray, count: int) -> tuple[np.int64, np.int64]:
    """The least and greatest of `keys[:count]`."""
    low = high = keys[0]
    for i in range(1, count):
        low = min(low, keys[i])
        high = max(high, keys[i])
    return low, high


@njit(cache=True, nogil=True)
def _split_at(low: np.int64, high: np.int64) -> int:
    """Where to split keys from `low` to `high`: the digit just below the bits they all
    share, or -1 when they are all equal."""
    if low == high:
        return -1
    return max(_bit_length(low ^ high) - _DIGIT_BITS, 0)


@njit(cache=True, nogil=True)
def _select(keys: np.ndarray, count: int, rank: int, tally: np.ndarray) -> np.int64:
    """The `rank`-th smallest of `keys[:count]`, which it reorders: split on the highest
    digit the keys differ in, keep the rank's bucket (compacted in place), until one
    value is left or few enough to sort."""
    while count > _SORTED_BELOW:
        shift = _split_at(*_span(keys, count))
        if shift < 0:
            return keys[0]
        tally[:] = 0
        for i in range(count):
            tally[(keys[i] >> shift) & (_DIGITS - 1)] += 1
        digit = 0
        while rank >= tally[digit]:
            rank -= tally[digit]
            digit += 1
        kept = 0
        for i in range(count):  # without a branch: the digits come in no order
            keys[kept] = keys[i]
            kept += (keys[i] >> shift) & (_DIGITS - 1) == digit
        count = kept
    return np.sort(keys[:count])[rank]


@njit(cache=True, nogil=True)
def _buckets_of(
    counts: np.ndarray, ranks: np.ndarray, digits: np.ndarray, below: np.ndarray
) -> None:
    """Each ascending rank's bucket of `counts` into `digits`, and the keys in the
    buckets before it into `below`."""
    before, digit = 0, 0
    for j in range(ranks.shape[0]):
        while ranks[j] >= before + counts[digit]:
            before += counts[digit]
            digit += 1
        digits[j], below[j] = digit, before


@njit(cache=True, nogil=True)
def _near_lowest(
    line: np.ndarray,
    low: np.int64,
    ranks: np.ndarray,
    counts: np.ndarray,
    digits: np.ndarray,
    below: np.ndarray,
    out: np.ndarray,
) -> bool:
    """The ranks from one tally where each lies less than `_DIGITS - 1` above the row's
    lowest key `low`, as ULP distances mostly do (a few far-off outliers would otherwise
    put the rest in one bucket of the highest digit); False, `out` not written, where
    one does not."""
    near = 0
    for i in range(line.shape[0]):  # vectorised: the tally below is not
        near += line[i] - low < _DIGITS - 1
    if near <= ranks[-1]:
        return False
    counts[:] = 0
    for i in range(line.shape[0]):
        counts[min(line[i] - low, _DIGITS - 1)] += 1
    _buckets_of(counts, ranks, digits, below)
    for j in range(ranks.shape[0]):
        out[j] = low + digits[j]
    return True


@njit(cache=True, nogil=True)
def ranked(keys: np.ndarray, ranks: np.ndarray, out: np.ndarray) -> None:
    """Each row's values at the sorted positions `ranks` (`np.sort(row)[ranks]`, `ranks`
    ascending) into `out`, for rows of non-negative int64 keys (ULP distances, or
    non-negative float64 errors viewed as int64: their bits order as their values do).

    A radix selection: one pass tallies the row by the highest digit its keys differ in,
    one copies out the buckets the ranks fall in, and each rank's bucket is split
    further, skipping the digits its keys share. A row that one value fills (zeros where
    backends agree) costs no more than another, where numpy's partition slows down 20
    to 40 times; numpy's sort of a 12,800-value row takes 0.045 ms on an Intel Xeon with
    AVX-512 but 0.34 on an AMD EPYC with it (its compressing stores are slow there)."""
    rows, size = keys.shape
    tally = np.zeros(_DIGITS, np.int64)
    counts = np.zeros(_DIGITS, np.int64)
    starts = np.empty(_DIGITS, np.int64)
    ends = np.empty(_DIGITS, np.int64)
    buckets = np.empty(size, np.int64)
    scratch = np.empty(size, np.int64)
    digits = np.empty(ranks.shape[0], np.int64)
    below = np.empty(ranks.shape[0], np.int64)
    for row in range(rows):
        line = keys[row]
        low, high = _span(line, size)
        shift = _split_at(low, high)
        if shift < 0:
            out[row, :] = low
            continue
        if _near_lowest(line, low, ranks, counts, digits, below, out[row]):
            continue
        counts[:] = 0
        for i in range(size):
            counts[(line[i] >> shift) & (_DIGITS - 1)] += 1
        _buckets_of(counts, ranks, digits, below)
        if shift == 0:  # the last digit: each bucket holds one value
            for j in range(ranks.shape[0]):
                out[row, j] = (low & ~np.int64(_DIGITS - 1)) | digits[j]
            continue
        # Each rank's bucket gets a start in `buckets`, the others -1.
        starts[:] = -1
        filled = 0
        for digit in digits:
            if starts[digit] < 0:
                starts[digit] = filled
                filled += counts[digit]
        ends[:] = starts
        for i in range(size):
            digit = (line[i] >> shift) & (_DIGITS - 1)
            if ends[digit] >= 0:
                buckets[ends[digit]] = line[i]
                ends[digit] += 1
        uniform = False
        for j in range(ranks.shape[0]):
            first, count = starts[digits[j]], counts[digits[j]]
            if j and digits[j] == digits[j - 1] and uniform:
                out[row, j] = out[row, j - 1]
                continue
            uniform = _split_at(*_span(buckets[first:], count)) < 0
            if uniform:
                out[row, j] = buckets[first]
                continue
            scratch[:count] = buckets[first : first + count]
            out[row, j] = _select(scratch, count, ranks[j] - below[j], tally)
