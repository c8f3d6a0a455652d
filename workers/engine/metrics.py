"""Divergence metrics: pure functions comparing a candidate's layer output with a reference's.

Everything is computed in float64 over the flattened outputs. Positions where
either side is NaN or Inf are counted, not measured: one Inf would otherwise turn
every norm into Inf and hide how the finite values drift. Against a float64
reference, "bit-identical" and ULP distances use the reference rounded to float32,
the best any float32 backend can do.
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields
from typing import Any

import numpy as np

FLOAT32_TINY = float(np.finfo(np.float32).tiny)
VERDICTS = ("identical", "rounding", "reduced-precision", "mismatch", "nonfinite")
# The verdicts worse than float32 rounding: the first layer with one is where drift starts.
DRIFT_VERDICTS = VERDICTS[2:]


@dataclass(frozen=True)
class VerdictThresholds:
    """Upper bounds on rel_l2 for each verdict; from settings, recorded with every result."""

    rounding: float = 1e-5
    reduced_precision: float = 1e-2


DEFAULT_THRESHOLDS = VerdictThresholds()


def _metric(*, aggregate: bool = True, unbounded: bool = False, wide: bool = False) -> Any:
    """A metric field. `aggregate`: averaged and ranked by the drift queries (counts are
    not); `unbounded`: may be +-inf (JSON writes it as a string); `wide`: needs 64 bits."""
    return field(metadata={"aggregate": aggregate, "unbounded": unbounded, "wide": wide})


@dataclass(frozen=True)
class Divergence:
    """One layer's comparison: a plain record of numbers.

    Its fields are the one list of metrics: the database columns, the API's row
    schema, the CSV header and the dashboards' metric menus are all made from them.
    """

    n: int = _metric(aggregate=False)
    n_diff: int = _metric()
    frac_diff: float = _metric()
    max_abs: float = _metric()
    mean_abs: float = _metric()
    rmse: float = _metric()
    rel_l2: float = _metric(unbounded=True)
    max_rel: float = _metric(unbounded=True)
    max_ulp: int = _metric(wide=True)
    median_ulp: float = _metric()
    cosine: float = _metric()
    sqnr_db: float = _metric(unbounded=True)
    p50_abs: float = _metric()
    p90_abs: float = _metric()
    p99_abs: float = _metric()
    hist_edges: list[float] = field(metadata={"histogram": True})
    hist_counts: list[int] = field(metadata={"histogram": True})
    argmax_agree: float | None = _metric()
    nonfinite_candidate: int = _metric(aggregate=False)
    nonfinite_reference: int = _metric(aggregate=False)
    nonfinite_mismatch: int = _metric(aggregate=False)
    verdict: str = field(metadata={"verdict": True})

    def as_dict(self) -> dict[str, object]:
        """Shallow (the histogram lists are shared): `dataclasses.asdict` deep-copies
        every list, 65 ms of a 7-backend dense10x50 comparison's 360."""
        return {name: getattr(self, name) for name in FIELD_NAMES}


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Divergence))
# The numeric metrics, in the record's order (what a table or CSV row shows).
METRIC_FIELDS: tuple[Field[Any], ...] = tuple(
    f for f in fields(Divergence) if "aggregate" in f.metadata
)
METRIC_NAMES: tuple[str, ...] = tuple(f.name for f in METRIC_FIELDS)
# The metrics the drift queries and dashboards can average over runs.
AGGREGATE_METRICS: tuple[str, ...] = tuple(f.name for f in METRIC_FIELDS if f.metadata["aggregate"])


def ulp_distance(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distance in float32 units of least precision (reference rounded to float32), in
    int64 (it exceeds int32: up to 2**32 - 2**24); the arrays broadcast like any numpy
    operands, 0-d ones included.

    Read as int32, the bits of two floats of one sign are as many integers apart as the
    floats are ULPs apart (positive floats ascend with their bits, negative ones descend),
    so the distance is the absolute difference of the bits; across signs, it is the sum of
    their magnitudes' bits, which makes -0.0 and +0.0 the same point. Only the few values
    whose signs differ need that second sum: one pass for most values instead of one per
    step of a sign-folding map (34 -> 13 ms on 7 million values).
    """
    bits_c, bits_r = np.broadcast_arrays(
        np.asarray(candidate, dtype=np.float32).view(np.int32),
        np.asarray(reference, dtype=np.float32).view(np.int32),
    )
    distance = np.subtract(bits_c, bits_r, out=np.empty(bits_c.shape, np.int64))
    np.abs(distance, out=distance)
    crossing = np.bitwise_xor(bits_c, bits_r) < 0
    if crossing.any():
        magnitude_c = bits_c[crossing] & 0x7FFFFFFF
        magnitude_r = bits_r[crossing] & 0x7FFFFFFF
        distance[crossing] = np.add(magnitude_c, magnitude_r, dtype=np.int64)
    return distance


def sorted_percentiles(ordered: np.ndarray, percents: list[float]) -> list[float]:
    """`np.percentile(values, percents)` (its linear method, the same arithmetic) of values
    already sorted: numpy's sort is vectorised, its selection of several ranks is not,
    and took three times as long as sorting here."""
    virtual = (ordered.size - 1) * np.true_divide(percents, 100)
    below = np.floor(virtual)
    gamma = virtual - below
    lower = ordered[below.astype(np.intp)].astype(np.float64)
    upper = ordered[np.minimum(below.astype(np.intp) + 1, ordered.size - 1)].astype(np.float64)
    span = upper - lower
    return [
        float(v) for v in np.where(gamma >= 0.5, upper - span * (1 - gamma), lower + span * gamma)
    ]


def sorted_median(ordered: np.ndarray) -> float:
    """`np.median` of values already sorted (the mean of the middle one or two)."""
    return float(np.mean(ordered[(ordered.size - 1) // 2 : ordered.size // 2 + 1]))


def bit_identical(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Elementwise 'same value', comparing at the candidate's precision; NaN equals NaN."""
    if candidate.dtype == np.float32 or reference.dtype == np.float32:
        candidate = candidate.astype(np.float32)
        reference = reference.astype(np.float32)
    same = candidate == reference
    return same | (np.isnan(candidate) & np.isnan(reference))


def argmax_agreement(candidate: np.ndarray, reference: np.ndarray) -> float | None:
    """Share of rows whose largest value sits at the same index of the last axis."""
    if candidate.ndim < 2 or candidate.shape[-1] < 2:
        return None
    rows_c = candidate.reshape(-1, candidate.shape[-1])
    rows_r = reference.reshape(-1, reference.shape[-1])
    return float(np.mean(np.argmax(rows_c, axis=1) == np.argmax(rows_r, axis=1)))


def signed_error_histogram(
    errors: np.ndarray, bins: int, bound: float
) -> tuple[list[float], list[int]]:
    """Histogram over [-bound, +bound] (bound: max |error|), symmetric so zero sits in the
    middle bin."""
    if bound == 0.0:
        return [-0.0, 0.0], [int(errors.size)]
    counts, edges = np.histogram(errors, bins=bins, range=(-bound, bound))
    return [float(e) for e in edges], [int(c) for c in counts]


def classify(
    rel_l2: float, n_diff: int, nonfinite_mismatch: int, thresholds: VerdictThresholds
) -> str:
    if nonfinite_mismatch:
        return "nonfinite"
    if n_diff == 0:
        return "identical"
    if rel_l2 <= thresholds.rounding:
        return "rounding"
    if rel_l2 <= thresholds.reduced_precision:
        return "reduced-precision"
    return "mismatch"


def _ratio(numerator: float, denominator: float) -> float:
    if numerator == 0.0:
        return 0.0
    return numerator / max(denominator, FLOAT32_TINY)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """A float64 dot product outside BLAS: OpenBLAS's threads spin against the other
    jobs on a busy machine, 0.7 ms a call on 12,800 values where this takes 10 µs."""
    return float(np.einsum("i,i->", a, b))


def divergence(
    candidate: np.ndarray,
    reference: np.ndarray,
    *,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    histogram_bins: int = 41,
) -> Divergence:
    """Compare one layer's output with the reference's; shapes must match."""
    if candidate.shape != reference.shape:
        raise ValueError(f"cannot compare shapes {candidate.shape} and {reference.shape}")
    cand = np.asarray(candidate).ravel()
    ref = np.asarray(reference).ravel()
    finite_c = np.isfinite(cand)
    finite_r = np.isfinite(ref)
    both = finite_c & finite_r
    if both.all():  # the usual case: no copies through a mask, nothing to count
        nonfinite_mismatch = nonfinite_candidate = nonfinite_reference = 0
        cand_finite, ref_finite = cand, ref
    else:
        nonfinite_mismatch = int(np.count_nonzero(~bit_identical(cand[~both], ref[~both])))
        nonfinite_candidate = int(cand.size - np.count_nonzero(finite_c))
        nonfinite_reference = int(ref.size - np.count_nonzero(finite_r))
        cand_finite, ref_finite = cand[both], ref[both]
    c64 = cand_finite.astype(np.float64, copy=False)
    r64 = ref_finite.astype(np.float64, copy=False)
    errors = c64 - r64
    empty = errors.size == 0
    # Every pass over the errors that needs them unsorted first, then sorted in place:
    # on large layers the temporaries' page faults cost as much as the arithmetic.
    abs_errors = np.abs(errors)
    mean_abs = 0.0 if empty else float(abs_errors.mean())
    relative = np.abs(r64)
    np.maximum(relative, FLOAT32_TINY, out=relative)
    np.divide(abs_errors, relative, out=relative)
    max_rel = 0.0 if empty else float(relative.max())
    del relative
    ordered_abs = abs_errors
    ordered_abs.sort()
    ulps = ulp_distance(cand_finite, ref_finite)
    ulps.sort()
    # Compared at the candidate's precision: at float32, equal exactly where 0 ULPs apart.
    if cand.dtype == np.float32 or ref.dtype == np.float32:
        finite_diff = ulps.size - int(np.searchsorted(ulps, 0, side="right"))
    else:
        finite_diff = int(np.count_nonzero(c64 != r64))
    n_diff = finite_diff + nonfinite_mismatch
    norm_err = math.sqrt(_dot(errors, errors))
    norm_ref = math.sqrt(_dot(r64, r64))
    norm_cand = math.sqrt(_dot(c64, c64))
    rel_l2 = _ratio(norm_err, norm_ref)
    if norm_err == 0.0:
        sqnr_db = math.inf
    elif norm_ref == 0.0:
        sqnr_db = -math.inf
    else:
        sqnr_db = 20.0 * math.log10(norm_ref / norm_err)
    if norm_cand == 0.0 and norm_ref == 0.0:
        cosine = 1.0
    elif norm_cand == 0.0 or norm_ref == 0.0:
        cosine = 0.0
    else:
        cosine = _dot(c64, r64) / (norm_cand * norm_ref)
    p50, p90, p99 = (0.0, 0.0, 0.0) if empty else sorted_percentiles(ordered_abs, [50, 90, 99])
    max_abs = 0.0 if empty else float(ordered_abs[-1])
    edges, counts = signed_error_histogram(errors, histogram_bins, max_abs)
    return Divergence(
        n=int(cand.size),
        n_diff=n_diff,
        frac_diff=n_diff / cand.size if cand.size else 0.0,
        max_abs=max_abs,
        mean_abs=mean_abs,
        rmse=0.0 if empty else norm_err / math.sqrt(errors.size),
        rel_l2=rel_l2,
        max_rel=max_rel,
        max_ulp=0 if empty else int(ulps[-1]),
        median_ulp=0.0 if empty else sorted_median(ulps),
        cosine=cosine,
        sqnr_db=sqnr_db,
        p50_abs=p50,
        p90_abs=p90,
        p99_abs=p99,
        hist_edges=edges,
        hist_counts=counts,
        argmax_agree=argmax_agreement(candidate, reference),
        nonfinite_candidate=nonfinite_candidate,
        nonfinite_reference=nonfinite_reference,
        nonfinite_mismatch=nonfinite_mismatch,
        verdict=classify(rel_l2, n_diff, nonfinite_mismatch, thresholds),
    )
