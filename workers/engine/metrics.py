"""Divergence metrics: pure functions comparing a candidate's layer output with a reference's.

Everything is computed in float64 over the flattened outputs. Positions where
either side is NaN or Inf are counted, not measured: one Inf would otherwise turn
every norm into Inf and hide how the finite values drift. Against a float64
reference, "bit-identical" and ULP distances use the reference rounded to float32,
the best any float32 backend can do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def bit_identical(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Elementwise 'same value', comparing at the candidate's precision; NaN equals NaN."""
    if candidate.dtype == np.float32 or reference.dtype == np.float32:
        candidate = candidate.astype(np.float32)
        reference = reference.astype(np.float32)
    same = candidate == reference
    return same | (np.isnan(candidate) & np.isnan(reference))


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


def _at_ranks(rows: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """`np.sort(rows, axis=1)[:, ranks]` for rows of non-negative values, by the compiled
    radix selection (workers/engine/metric_kernels.py `ranked`); float64 rows are read
    as their int64 bits, which order as non-negative values do."""
    from workers.engine import metric_kernels as kernels

    wanted = np.unique(ranks)
    out = np.empty((rows.shape[0], wanted.size), np.int64)
    kernels.ranked(rows.view(np.int64), wanted, out)
    return out.view(rows.dtype)[:, np.searchsorted(wanted, ranks)]


def _percentiles(rows: np.ndarray, percents: list[float]) -> np.ndarray:
    """`np.percentile(row, percents)` of each row (its linear method, the same arithmetic,
    between the two ranks each percentile lies between)."""
    size = rows.shape[1]
    virtual = (size - 1) * np.true_divide(percents, 100)
    below = np.floor(virtual).astype(np.intp)
    above = np.minimum(below + 1, size - 1)
    values = _at_ranks(rows, np.concatenate([below, above])).astype(np.float64)
    lower, upper = values[:, : len(percents)], values[:, len(percents) :]
    gamma = virtual - below
    span = upper - lower
    return np.where(gamma >= 0.5, upper - span * (1 - gamma), lower + span * gamma)


def _argmax_agreement(candidate: np.ndarray, reference: np.ndarray) -> float | None:
    """The share of a layer's rows whose largest value sits at the same index of the last
    axis (None where that axis has fewer than two values)."""
    if candidate.ndim < 2 or candidate.shape[-1] < 2:
        return None
    rows_c = candidate.reshape(-1, candidate.shape[-1]).argmax(axis=1)
    rows_r = reference.reshape(-1, reference.shape[-1]).argmax(axis=1)
    return float((rows_c == rows_r).mean())


def _kernel_array(values: np.ndarray) -> np.ndarray:
    """`values` as the kernels take them: float32 or float64 as stored (other dtypes as
    float64), C-ordered, writable (numba compiles anew for read-only arrays, as outputs
    read from a page's buffer are)."""
    dtype = values.dtype if values.dtype in (np.float32, np.float64) else np.float64
    array = np.ascontiguousarray(values, dtype=dtype)
    return array if array.flags.writeable else array.copy()


def _edges(bounds: np.ndarray, bins: int) -> np.ndarray:
    """Each row's histogram edges as np.histogram makes them, np.linspace over
    -bound..bound; rows of bound 0 get none (zeros). np.linspace over several rows at once
    computes every row another way once one row's step is 0 (a bound of a few subnormals),
    so those rows have theirs made one at a time."""
    edges = np.zeros((bounds.size, bins + 1))
    steps = 2 * bounds / bins
    spread = np.flatnonzero(steps)
    if spread.size:
        edges[spread] = np.linspace(-bounds[spread], bounds[spread], bins + 1, axis=1)
    for row in np.flatnonzero(bounds * (steps == 0)).tolist():
        edges[row] = np.linspace(-bounds[row], bounds[row], bins + 1)
    return edges


# The edges of a layer whose errors are all 0 (its one bin holds every value): np.linspace
# over -0..0 would give bins + 1 equal edges.
NO_SPREAD_EDGES = (-0.0, 0.0)


def histogram_edges(bound: float, bins: int) -> list[float]:
    """A layer's histogram edges from its max_abs and bin count, as its metrics made them:
    the rows store only the counts. With its 42 edges a row's histogram was 1,193 bytes of
    JSON against 187, and encoding 21 rows' took 0.63 ms against 0.08."""
    return list(NO_SPREAD_EDGES) if bound == 0.0 else _edges(np.array([bound]), bins)[0].tolist()


def _measured_rows(
    candidate: np.ndarray, reference: np.ndarray, *, last: int, histogram_bins: int
) -> list[dict[str, Any] | None]:
    """The measured metrics of each row (rows of one length; `last`: the layers' last
    axis, for argmax_agree, 0 for none), for all rows at once by the compiled passes of
    workers/engine/metric_kernels.py, the ranks of each row's errors and ULP distances
    selected by its radix selection; None for a row whose errors are not all finite (it
    holds NaN or Inf, or an error overflows), which is measured apart."""
    count, size = candidate.shape
    if size == 0:
        return [_empty_metrics() for _ in range(count)]
    from workers.engine import metric_kernels as kernels  # numba: only where comparing

    errors = np.empty((count, size))
    ulps = np.empty((count, size), np.int64)
    floats = np.empty((count, kernels.FLOAT_COLUMNS))
    ints = np.empty((count, kernels.INT_COLUMNS), np.int64)
    # Compared at the candidate's precision: at float32, equal exactly where 0 ULPs apart.
    at_float32 = candidate.dtype == np.float32 or reference.dtype == np.float32
    kernels.row_passes(
        _kernel_array(candidate),
        _kernel_array(reference),
        at_float32,
        FLOAT32_TINY,
        last,
        errors,
        ulps,
        floats,
        ints,
    )
    finite = ints[:, kernels.NONFINITE_ERRORS] == 0
    rows: list[dict[str, Any] | None] = [None] * count
    kept = np.flatnonzero(finite)
    if not kept.size:
        return rows
    if kept.size < count:  # a copy only where a row is measured apart
        errors, ulps, floats, ints = errors[kept], ulps[kept], floats[kept], ints[kept]
    max_abs = floats[:, kernels.MAX_ABS].copy()
    edges = _edges(max_abs, histogram_bins)
    counts = np.zeros((kept.size, histogram_bins), np.int64)
    kernels.histograms(errors, max_abs, edges, counts)  # leaves `errors` absolute
    mean_abs = floats[:, kernels.SUM_ABS] / size
    norm_err, norm_ref, norm_cand = np.sqrt(
        floats[:, [kernels.SQUARED_ERROR, kernels.SQUARED_REFERENCE, kernels.SQUARED_CANDIDATE]].T
    )
    dot = floats[:, kernels.DOT]
    percentiles = _percentiles(errors, [50, 90, 99])
    median_ulp = _at_ranks(ulps, np.array([(size - 1) // 2, size // 2])).mean(axis=1)
    n_diff, max_ulp = ints[:, kernels.N_DIFF], ints[:, kernels.MAX_ULP]
    runs = size // last if last else 0
    agree = (ints[:, kernels.ARGMAX_AGREE] / runs).tolist() if runs else [None] * kept.size
    max_rel = floats[:, kernels.MAX_REL]
    # Plain floats and ints once per array: indexing numpy scalars row by row cost more
    # than the metrics of a small layer.
    arrays = (n_diff, max_abs, mean_abs, max_rel, max_ulp, median_ulp, percentiles)
    norms = (norm_err, norm_ref, norm_cand, dot)
    columns = zip(
        *(array.tolist() for array in (*arrays, *norms, edges, counts)), agree, strict=True
    )
    for row, values in zip(kept.tolist(), columns, strict=True):
        diff, bound, mean, rel, ulp, median, ranks, e, r, c, d, row_edges, row_counts, share = (
            values
        )
        rows[row] = {
            "n_diff": diff,
            "max_abs": bound,
            "mean_abs": mean,
            "rmse": e / math.sqrt(size),
            "rel_l2": _ratio(e, r),
            "max_rel": rel,
            "max_ulp": ulp,
            "median_ulp": median,
            "cosine": _cosine(d, c, r),
            "sqnr_db": _sqnr_db(e, r),
            "p50_abs": ranks[0],
            "p90_abs": ranks[1],
            "p99_abs": ranks[2],
            "hist_edges": list(NO_SPREAD_EDGES) if bound == 0.0 else row_edges,
            "hist_counts": [size] if bound == 0.0 else row_counts,
            "argmax_agree": share,
        }
    return rows


def _empty_metrics() -> dict[str, Any]:
    """A layer of no values: nothing differs (its own lists, as every row has)."""
    return {
        "n_diff": 0,
        "max_abs": 0.0,
        "mean_abs": 0.0,
        "rmse": 0.0,
        "rel_l2": 0.0,
        "max_rel": 0.0,
        "max_ulp": 0,
        "median_ulp": 0.0,
        "cosine": 1.0,
        "sqnr_db": math.inf,
        "p50_abs": 0.0,
        "p90_abs": 0.0,
        "p99_abs": 0.0,
        "hist_edges": list(NO_SPREAD_EDGES),
        "hist_counts": [0],
        "argmax_agree": None,
    }


def _sqnr_db(norm_err: float, norm_ref: float) -> float:
    if norm_err == 0.0:
        return math.inf
    if norm_ref == 0.0:
        return -math.inf
    return 20.0 * math.log10(norm_ref / norm_err)


def _cosine(dot: float, norm_cand: float, norm_ref: float) -> float:
    if norm_cand == 0.0 and norm_ref == 0.0:
        return 1.0
    if norm_cand == 0.0 or norm_ref == 0.0:
        return 0.0
    return dot / (norm_cand * norm_ref)


def _with_nonfinite(
    candidate: np.ndarray, reference: np.ndarray, histogram_bins: int
) -> dict[str, Any]:
    """One layer that holds NaN or Inf: its finite positions measured, the others counted."""
    cand, ref = candidate.ravel(), reference.ravel()
    finite_c, finite_r = np.isfinite(cand), np.isfinite(ref)
    both = finite_c & finite_r
    mismatch = int(np.count_nonzero(~bit_identical(cand[~both], ref[~both])))
    [measured] = _measured_rows(
        cand[both][None], ref[both][None], last=0, histogram_bins=histogram_bins
    )
    if measured is None:
        raise ValueError("an error overflows float64: values beyond 1e307 on both sides")
    return measured | {
        "n_diff": measured["n_diff"] + mismatch,
        "nonfinite_candidate": int(cand.size - np.count_nonzero(finite_c)),
        "nonfinite_reference": int(ref.size - np.count_nonzero(finite_r)),
        "nonfinite_mismatch": mismatch,
        "argmax_agree": _argmax_agreement(candidate, reference),
    }


def divergences(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    histogram_bins: int = 41,
) -> list[Divergence]:
    """Compare each layer's output (candidate, reference) with the reference's; each pair's
    shapes must match. Layers of one shape and dtypes are measured together."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (candidate, reference) in enumerate(pairs):
        if candidate.shape != reference.shape:
            raise ValueError(f"cannot compare shapes {candidate.shape} and {reference.shape}")
        groups.setdefault((candidate.shape, candidate.dtype, reference.dtype), []).append(i)
    measured: dict[int, dict[str, Any]] = {}
    for (shape, _, _), members in groups.items():
        stacked_c, stacked_r = (
            np.stack([np.asarray(pairs[i][side]) for i in members])
            if len(members) > 1
            else np.asarray(pairs[members[0]][side])[None]  # a view: a big layer is not copied
            for side in (0, 1)
        )
        last = shape[-1] if len(shape) >= 2 and shape[-1] >= 2 else 0
        rows = _measured_rows(
            stacked_c.reshape(len(members), -1),
            stacked_r.reshape(len(members), -1),
            last=last,
            histogram_bins=histogram_bins,
        )
        for row, metrics in enumerate(rows):
            measured[members[row]] = (
                _with_nonfinite(stacked_c[row], stacked_r[row], histogram_bins)
                if metrics is None
                else metrics | _ALL_FINITE
            )
    return [_divergence(pairs[i][0].size, measured[i], thresholds) for i in range(len(pairs))]


_ALL_FINITE = {"nonfinite_candidate": 0, "nonfinite_reference": 0, "nonfinite_mismatch": 0}


def _divergence(size: int, metrics: dict[str, Any], thresholds: VerdictThresholds) -> Divergence:
    n_diff = metrics["n_diff"]
    return Divergence(
        n=int(size),
        frac_diff=n_diff / size if size else 0.0,
        verdict=classify(metrics["rel_l2"], n_diff, metrics["nonfinite_mismatch"], thresholds),
        **metrics,
    )


def load_kernels() -> None:
    """Compile the comparison's kernels, or load them from numba's cache next to their
    module (3 s compiling, 0.4 s loading): `make install` and every job process's
    warm-up call it, so no comparison pays for it. The kernels read float32 and float64
    as stored: one compiled version for each pair of the two."""
    divergences(
        [
            (np.zeros((2, 3), candidate), np.arange(6.0, dtype=reference).reshape(2, 3))
            for candidate in (np.float32, np.float64)
            for reference in (np.float32, np.float64)
        ]
    )


def divergence(
    candidate: np.ndarray,
    reference: np.ndarray,
    *,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    histogram_bins: int = 41,
) -> Divergence:
    """Compare one layer's output with the reference's; shapes must match."""
    [one] = divergences(
        [(np.asarray(candidate), np.asarray(reference))],
        thresholds=thresholds,
        histogram_bins=histogram_bins,
    )
    return one
