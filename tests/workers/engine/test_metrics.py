"""Metrics on small hand-checked arrays: each expected value is worked out by hand."""

import math

import numpy as np
import pytest

from workers.engine.metrics import (
    VerdictThresholds,
    classify,
    divergence,
    divergences,
)

F32 = np.float32


def ulps_apart(candidate: np.ndarray, reference: np.ndarray) -> list[int]:
    """Each pair of values' ULP distance, as a comparison measures it: one-value layers."""
    pairs = [(c[None], r[None]) for c, r in zip(candidate, reference, strict=True)]
    return [result.max_ulp for result in divergences(pairs)]


def test_adjacent_float32_values_are_one_ulp_apart() -> None:
    one = np.array([1.0], dtype=F32)
    assert ulps_apart(np.nextafter(one, F32(2)), one) == [1]
    assert ulps_apart(np.nextafter(one, F32(0)), one) == [1]
    # [1, 2) holds the 2**23 float32 values of one exponent.
    assert ulps_apart(np.array([2.0], F32), one) == [2**23]


def test_ulp_distance_crosses_zero_and_treats_signed_zeros_as_equal() -> None:
    tiny = np.array([np.finfo(F32).smallest_subnormal], dtype=F32)
    assert ulps_apart(-tiny, tiny) == [2]
    assert ulps_apart(np.array([-0.0], F32), np.array([0.0], F32)) == [0]
    # 1.0 is 0x3F800000: -1.0 to 1.0 crosses zero, twice its bits apart.
    assert ulps_apart(np.array([-1.0], F32), np.array([1.0], F32)) == [2 * 0x3F800000]
    assert ulps_apart(np.array([1.0], F32), np.array([-1.0], F32)) == [2 * 0x3F800000]


def test_ulp_distance_counts_the_float32_values_between_by_stepping() -> None:
    """Against np.nextafter walked one float at a time, on both signs, across zero and
    through the subnormals: the number of steps from one value to the other."""
    starts = [F32(-1.5), F32(2.0), F32(-3e-45), F32(-0.0), F32(-np.finfo(F32).max)]
    for start in starts:
        walked = [start]
        for _ in range(40):
            walked.append(np.nextafter(walked[-1], F32(np.inf)))
        values = np.array(walked, F32)
        steps = np.arange(values.size)  # nextafter visits -0.0, never +0.0: one point
        assert ulps_apart(values, np.full_like(values, start)) == steps.tolist(), start
        assert ulps_apart(np.full_like(values, start), values) == steps.tolist(), start


def test_float64_reference_is_rounded_to_float32_before_counting() -> None:
    reference = np.array([0.1, 0.2], dtype=np.float64)
    result = divergence(reference.astype(F32), reference)
    assert result.n_diff == 0
    assert result.max_ulp == 0
    assert result.verdict == "identical"
    rounding_errors = [abs(float(F32(v)) - v) for v in (0.1, 0.2)]
    assert result.max_abs == pytest.approx(max(rounding_errors))
    assert result.verdict == "identical"


def test_hand_computed_norms_and_errors() -> None:
    reference = np.array([3.0, 4.0], dtype=np.float64)
    candidate = np.array([3.0, 4.5], dtype=np.float64)
    result = divergence(candidate, reference)
    assert result.n == 2
    assert result.n_diff == 1
    assert result.frac_diff == 0.5
    assert result.max_abs == 0.5
    assert result.mean_abs == 0.25
    assert result.rmse == pytest.approx(math.sqrt(0.125))
    assert result.rel_l2 == pytest.approx(0.5 / 5.0)
    assert result.max_rel == pytest.approx(0.5 / 4.0)
    assert result.sqnr_db == pytest.approx(20 * math.log10(5.0 / 0.5))
    assert result.cosine == pytest.approx((9 + 18) / (5.0 * math.sqrt(9 + 20.25)))
    assert result.p50_abs == pytest.approx(0.25)
    assert sum(result.hist_counts) == 2
    assert result.verdict == "mismatch"


def test_zero_reference_never_gives_nan() -> None:
    reference = np.zeros(4, dtype=np.float64)
    candidate = np.array([0.0, 1e-30, 0.0, 0.0], dtype=np.float64)
    result = divergence(candidate, reference)
    values = [result.rel_l2, result.max_rel, result.cosine, result.sqnr_db, result.mean_abs]
    assert not any(math.isnan(v) for v in values)
    assert result.max_rel == pytest.approx(1e-30 / np.finfo(F32).tiny)
    assert result.sqnr_db == -math.inf
    assert result.cosine == 0.0


def test_identical_outputs_have_infinite_sqnr_and_unit_cosine() -> None:
    values = np.array([1.0, -2.0, 3.0], dtype=F32)
    result = divergence(values, values.copy())
    assert result.sqnr_db == math.inf
    assert result.cosine == 1.0
    assert result.verdict == "identical"
    all_zero = divergence(np.zeros(3, F32), np.zeros(3, F32))
    assert all_zero.cosine == 1.0 and all_zero.rel_l2 == 0.0


def test_nonfinite_values_are_counted_not_measured() -> None:
    reference = np.array([1.0, np.nan, 2.0, np.inf], dtype=F32)
    same_pattern = np.array([1.0, np.nan, 2.0, np.inf], dtype=F32)
    result = divergence(same_pattern, reference)
    assert result.nonfinite_candidate == 2 and result.nonfinite_reference == 2
    assert result.nonfinite_mismatch == 0
    assert result.verdict == "identical"
    assert math.isfinite(result.rel_l2)
    broken = divergence(np.array([1.0, np.nan, np.nan, np.inf], dtype=F32), reference)
    assert broken.nonfinite_mismatch == 1
    assert broken.verdict == "nonfinite"


def test_argmax_agreement_over_rows() -> None:
    reference = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], dtype=F32)
    candidate = np.array([[0.2, 0.8], [0.4, 0.6], [0.3, 0.7]], dtype=F32)
    assert divergence(candidate, reference).argmax_agree == pytest.approx(2 / 3)
    assert divergence(candidate[:, :1], reference[:, :1]).argmax_agree is None


def test_histogram_is_symmetric_around_zero() -> None:
    reference = np.zeros(5, dtype=np.float64)
    candidate = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    result = divergence(candidate, reference, histogram_bins=5)
    assert result.hist_edges[0] == -2.0 and result.hist_edges[-1] == 2.0
    assert result.hist_counts == [1, 1, 1, 1, 1]


@pytest.mark.parametrize(
    ("rel_l2", "n_diff", "expected"),
    [
        (0.0, 0, "identical"),
        (1e-7, 3, "rounding"),
        (1e-3, 3, "reduced-precision"),
        (0.5, 3, "mismatch"),
    ],
)
def test_verdict_thresholds(rel_l2: float, n_diff: int, expected: str) -> None:
    assert classify(rel_l2, n_diff, 0, VerdictThresholds(1e-5, 1e-2)) == expected


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(2,\) and \(3,\)"):
        divergence(np.zeros(2), np.zeros(3))


def plain_divergence(candidate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The metrics written the plain way (a mask, np.percentile, np.median, np.histogram,
    comparisons at float32 as float32): the oracle for the vectorised, sort-based code."""
    c, r = candidate.ravel(), reference.ravel()
    both = np.isfinite(c) & np.isfinite(r)
    e = c[both].astype(np.float64) - r[both].astype(np.float64)
    c32, r32 = c.astype(F32), r.astype(F32)
    same = (c32 == r32) | (np.isnan(c32) & np.isnan(r32))
    bits_c = c32[both].view(np.int32).astype(np.int64)
    bits_r = r32[both].view(np.int32).astype(np.int64)
    ordered_c = np.where(bits_c < 0, -(2**31) - bits_c, bits_c)
    ordered_r = np.where(bits_r < 0, -(2**31) - bits_r, bits_r)
    ulps = np.abs(ordered_c - ordered_r)
    bound = np.abs(e).max()
    counts, edges = np.histogram(e, bins=41, range=(-bound, bound))
    p50, p90, p99 = np.percentile(np.abs(e), [50, 90, 99])
    return {
        "n_diff": int(np.count_nonzero(~same)),
        "max_abs": bound,
        "mean_abs": np.abs(e).mean(),
        "rmse": np.sqrt(np.mean(e * e)),
        "max_ulp": int(ulps.max()),
        "median_ulp": float(np.median(ulps)),
        "p50_abs": p50,
        "p90_abs": p90,
        "p99_abs": p99,
        "hist_counts": [int(n) for n in counts],
        "hist_edges": [float(x) for x in edges],
        "nonfinite_mismatch": int(np.count_nonzero(~same[~both])),
    }


@pytest.mark.parametrize("size", [1, 2, 7, 12_800, 100_001])
@pytest.mark.parametrize("with_nonfinite", [False, True])
def test_metrics_agree_with_the_plain_numpy_formulas(size: int, with_nonfinite: bool) -> None:
    rng = np.random.default_rng(size)
    reference = rng.standard_normal(size) * 10.0 ** rng.integers(-40, 3, size)
    reference[: size // 5] = 0.0  # zeros, negative zeros and subnormals on the candidate side
    candidate = (reference * (1 + rng.standard_normal(size) * 1e-6)).astype(F32)
    candidate[: size // 10] = -0.0
    candidate[size // 10 : size // 5] = np.finfo(F32).smallest_subnormal
    if with_nonfinite and size > 2:
        candidate[-1], reference[-2] = np.nan, np.inf
        candidate[-2] = np.inf  # same infinity: not a mismatch
    expected = plain_divergence(candidate, reference)
    result = divergence(candidate, reference)
    for name, value in expected.items():
        got = getattr(result, name)
        if isinstance(value, float) and name != "median_ulp":
            assert got == pytest.approx(value, rel=1e-12, abs=0.0), name
        else:
            assert got == value, name


def test_layers_measured_together_agree_with_the_plain_formulas_one_by_one() -> None:
    """Layers of one shape are measured in one batch: each must come out as if alone, with
    shapes, reference dtypes, empty layers and NaN or Inf mixed in one call."""
    rng = np.random.default_rng(7)
    shapes = [(64, 10), (64, 10), (3, 4, 5), (64, 10), (0,), (3, 4, 5), (64, 10)]
    pairs = []
    for i, shape in enumerate(shapes):
        reference = rng.standard_normal(shape) * 10.0 ** float(rng.integers(-5, 3))
        noise = rng.standard_normal(shape) * 10.0 ** -float(rng.integers(3, 8))
        candidate = (reference + noise).astype(F32)
        reference = reference.astype(F32 if i % 3 == 2 else np.float64)
        if i == 3:
            candidate[0, 0], reference[1, 1] = np.nan, np.inf
        pairs.append((candidate, reference))
    results = divergences(pairs)
    for (candidate, reference), result in zip(pairs, results, strict=True):
        assert result.n == candidate.size
        if candidate.size == 0:
            assert result.n_diff == 0 and result.verdict == "identical"
            continue
        for name, value in plain_divergence(candidate, reference).items():
            got = getattr(result, name)
            if isinstance(value, float) and name != "median_ulp":
                assert got == pytest.approx(value, rel=1e-12, abs=0.0), name
            else:
                assert got == value, name
        rows_c = candidate.reshape(-1, candidate.shape[-1]).argmax(axis=1)
        rows_r = reference.reshape(-1, reference.shape[-1]).argmax(axis=1)
        assert result.argmax_agree == pytest.approx(float(np.mean(rows_c == rows_r)))
    assert results[3].nonfinite_candidate == 1 and results[3].nonfinite_mismatch == 2


@pytest.mark.parametrize("size", [33, 65, 300, 12_800, 100_001])
@pytest.mark.parametrize("agreeing", [0.7, 1.0])
def test_percentiles_where_one_value_fills_most_of_a_layer(size: int, agreeing: float) -> None:
    """Backends that agree give rows mostly of zeros (errors and ULPs), the input that
    slows numpy's partition down 20 to 40 times: the ranks must still be numpy's."""
    rng = np.random.default_rng(size)
    reference = rng.standard_normal(size).astype(F32).astype(np.float64)
    candidate = reference.astype(F32)
    one_ulp = rng.random(size) > agreeing
    candidate[one_ulp] = np.nextafter(candidate[one_ulp], F32(np.inf))
    noisy = rng.random(size) > (1 + agreeing) / 2
    candidate[noisy] += rng.standard_normal(int(noisy.sum())).astype(F32) * F32(1e-3)
    expected = plain_divergence(candidate, reference)
    result = divergence(candidate, reference)
    for name in ("p50_abs", "p90_abs", "p99_abs", "median_ulp", "max_ulp", "n_diff"):
        assert getattr(result, name) == expected[name], name


def test_a_layer_measures_the_same_whatever_layers_share_its_batch() -> None:
    """Layers of one shape are measured together; an identical one among them (its
    histogram's range is 0) must not move the others' edges or counts off numpy's, and
    read-only arrays (outputs read from a page's buffer) measure as writable ones do."""
    rng = np.random.default_rng(3)
    reference = rng.standard_normal((3, 64, 10))
    candidate = (reference + rng.standard_normal(reference.shape) * 1e-4).astype(F32)
    reference[1] = reference[1].astype(F32)
    candidate[1] = reference[1]  # no error at all: a histogram range of 0
    alone = [divergence(candidate[i], reference[i]) for i in (0, 2)]
    frozen_c, frozen_r = candidate.copy(), reference.copy()
    frozen_c.flags.writeable = frozen_r.flags.writeable = False
    together = divergences([(frozen_c[i], frozen_r[i]) for i in range(3)])
    for i, one in zip((0, 2), alone, strict=True):
        expected = plain_divergence(candidate[i], reference[i])
        assert together[i].hist_edges == one.hist_edges == expected["hist_edges"]
        assert together[i].hist_counts == one.hist_counts == expected["hist_counts"]
        assert together[i].p99_abs == one.p99_abs == expected["p99_abs"]
    assert together[1].verdict == "identical" and together[1].hist_counts == [640]


def test_argmax_agreement_takes_the_first_of_equal_largest_values() -> None:
    """As np.argmax: where a row's largest value appears twice, its first index counts."""
    candidate = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]], F32)
    reference = np.array([[1.0, 0.0, 1.0], [2.0, 2.0, 0.0]])
    assert divergence(candidate, reference).argmax_agree == 0.5  # row 0 agrees, row 1 not


def test_histogram_edges_of_a_layer_beside_one_of_subnormal_errors() -> None:
    """np.linspace over several rows computes every row another way once one row's step
    is 0: a layer whose errors are a few subnormals must not move its neighbours' edges."""
    rng = np.random.default_rng(4)
    reference = rng.standard_normal((2, 64, 10))
    candidate = reference + rng.standard_normal(reference.shape) * 1e-7
    candidate[0] = reference[0]
    reference[0, 0, 0], candidate[0, 0, 0] = 0.0, 5e-324  # the layer's one error
    subnormal, neighbour = divergences([(c, r) for c, r in zip(candidate, reference, strict=True)])
    expected = plain_divergence(candidate[1], reference[1])
    assert neighbour.hist_edges == expected["hist_edges"]
    assert neighbour.hist_counts == expected["hist_counts"]
    # np.histogram refuses a range this narrow; its edges would be np.linspace's.
    assert subnormal.hist_edges == np.linspace(-5e-324, 5e-324, 42).tolist()
    assert sum(subnormal.hist_counts) == 640


@pytest.mark.parametrize("bound", [1.0, 3e-7, 7.25e5, 1e-300])
def test_errors_on_and_beside_every_histogram_edge_fall_in_numpys_bins(bound: float) -> None:
    """The histogram estimates each error's bin by multiplying where np.histogram divides,
    then corrects it by the edges as np.histogram does: errors at every edge and one
    rounding step either side of it, where the two estimates can differ, must land in
    numpy's bins."""
    edges = np.linspace(-bound, bound, 42)
    errors = np.concatenate(
        [edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), np.zeros(3)]
    )
    errors = np.clip(errors, -bound, bound)  # the extremes' outer neighbours stay in range
    result = divergence(errors, np.zeros_like(errors))  # the errors exactly
    expected, numpy_edges = np.histogram(errors, bins=41, range=(-bound, bound))
    assert result.max_abs == bound
    assert result.hist_edges == numpy_edges.tolist()
    assert result.hist_counts == expected.tolist()
