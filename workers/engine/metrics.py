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


def _argmax_agreement(candidate: np.ndarray, reference: np.ndarray) -> list[float | None]:
    """Per layer (the first axis), the share of its rows whose largest value sits at the
    same index of the last axis."""
    count, shape = candidate.shape[0], candidate.shape[1:]
    if len(shape) < 2 or shape[-1] < 2:
        return [None] * count
    rows_c = candidate.reshape(count, -1, shape[-1]).argmax(axis=2)
    rows_r = reference.reshape(count, -1, shape[-1]).argmax(axis=2)
    return (rows_c == rows_r).mean(axis=1).tolist()


def _kernel_array(values: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """`values` as the kernels take them: C-ordered, writable (numba compiles anew for
    read-only arrays, as outputs read from a page's buffer are), of `dtype`."""
    array = np.ascontiguousarray(values, dtype=dtype)
    return array if array.flags.writeable else array.copy()


def _float32_bits(values: np.ndarray) -> np.ndarray:
    return _kernel_array(values, np.float32).view(np.int32)


def _finite_metrics(
    candidate: np.ndarray, reference: np.ndarray, *, histogram_bins: int
) -> list[dict[str, Any]]:
    """The measured metrics of each row of finite values (rows of one length), for all
    rows at once by the compiled passes of workers/engine/metric_kernels.py, the ranks of
    each row's errors and ULP distances selected by its radix selection."""
    count, size = candidate.shape
    if size == 0:
        return [_empty_metrics() for _ in range(count)]
    from workers.engine import metric_kernels as kernels  # numba: only where comparing

    c64, r64 = _kernel_array(candidate, np.float64), _kernel_array(reference, np.float64)
    abs_errors = np.empty((count, size))
    ulps = np.empty((count, size), np.int64)
    floats = np.empty((count, kernels.FLOAT_COLUMNS))
    ints = np.empty((count, kernels.INT_COLUMNS), np.int64)
    # Compared at the candidate's precision: at float32, equal exactly where 0 ULPs apart.
    at_float32 = candidate.dtype == np.float32 or reference.dtype == np.float32
    bits_c, bits_r = _float32_bits(candidate), _float32_bits(reference)
    kernels.row_passes(
        c64, r64, bits_c, bits_r, at_float32, FLOAT32_TINY, abs_errors, ulps, floats, ints
    )
    max_abs = floats[:, kernels.MAX_ABS].copy()
    if not np.isfinite(max_abs).all():
        raise ValueError("an error overflows float64: values beyond 1e307 on both sides")
    # Each row's edges as np.histogram makes them, one np.linspace a row: over several
    # rows at once it computes every row another way once one row's step is 0.
    edges = np.array([np.linspace(-b, b, histogram_bins + 1) for b in max_abs.tolist()])
    counts = np.zeros((count, histogram_bins), np.int64)
    kernels.histograms(c64, r64, max_abs, edges, counts)
    mean_abs = floats[:, kernels.SUM_ABS] / size
    norm_err, norm_ref, norm_cand = np.sqrt(
        floats[:, [kernels.SQUARED_ERROR, kernels.SQUARED_REFERENCE, kernels.SQUARED_CANDIDATE]].T
    )
    dot = floats[:, kernels.DOT]
    percentiles = _percentiles(abs_errors, [50, 90, 99])
    median_ulp = _at_ranks(ulps, np.array([(size - 1) // 2, size // 2])).mean(axis=1)
    n_diff, max_ulp = ints.T
    max_rel = floats[:, kernels.MAX_REL]
    # Plain floats and ints once per array: indexing numpy scalars row by row cost more
    # than the metrics of a small layer.
    arrays = (n_diff, max_abs, mean_abs, max_rel, max_ulp, median_ulp, percentiles)
    norms = (norm_err, norm_ref, norm_cand, dot)
    columns = zip(*(array.tolist() for array in (*arrays, *norms)), strict=True)
    rows = []
    for i, (diff, bound, mean, rel, ulp, median, ranks, e, r, c, d) in enumerate(columns):
        rows.append(
            {
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
                "hist_edges": [-0.0, 0.0] if bound == 0.0 else edges[i].tolist(),
                "hist_counts": [size] if bound == 0.0 else counts[i].tolist(),
            }
        )
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
        "hist_edges": [-0.0, 0.0],
        "hist_counts": [0],
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
    [measured] = _finite_metrics(cand[both][None], ref[both][None], histogram_bins=histogram_bins)
    return measured | {
        "n_diff": measured["n_diff"] + mismatch,
        "nonfinite_candidate": int(cand.size - np.count_nonzero(finite_c)),
        "nonfinite_reference": int(ref.size - np.count_nonzero(finite_r)),
        "nonfinite_mismatch": mismatch,
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
    for members in groups.values():
        stacked_c, stacked_r = (
            np.stack([np.asarray(pairs[i][side]) for i in members])
            if len(members) > 1
            else np.asarray(pairs[members[0]][side])[None]  # a view: a big layer is not copied
            for side in (0, 1)
        )
        candidate = stacked_c.reshape(len(members), -1)
        reference = stacked_r.reshape(len(members), -1)
        finite = (np.isfinite(candidate) & np.isfinite(reference)).all(axis=1)
        plain = np.flatnonzero(finite)
        pick = slice(None) if len(plain) == len(members) else plain  # no copy when all are
        rows = (
            _finite_metrics(candidate[pick], reference[pick], histogram_bins=histogram_bins)
            if len(plain)
            else []
        )
        for row, metrics in zip(plain.tolist(), rows, strict=True):
            measured[members[row]] = metrics | _ALL_FINITE
        for row in np.flatnonzero(~finite).tolist():
            measured[members[row]] = _with_nonfinite(candidate[row], reference[row], histogram_bins)
        for row, agree in enumerate(_argmax_agreement(stacked_c, stacked_r)):
            measured[members[row]]["argmax_agree"] = agree
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
    warm-up call it, so no comparison pays for it."""
    divergences([(np.zeros(3, np.float32), np.arange(3.0))])


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
