"""The sketch's stated bound against exact nearest-rank percentiles computed by sorting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.data.quantile_sketch import ALPHA, QuantileSketch

FRACTIONS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)


def exact(values: np.ndarray, fraction: float) -> float:
    """Nearest rank by the textbook definition: the ceil(q·n)-th smallest value."""
    ordered = np.sort(values)
    return float(ordered[max(1, math.ceil(fraction * len(ordered))) - 1])


def within_bound(estimate: float | None, truth: float) -> bool:
    assert estimate is not None
    if math.isinf(truth):
        return estimate == truth
    return abs(estimate - truth) <= ALPHA * abs(truth) * (1 + 1e-12)


DISTRIBUTIONS = {
    # rel_l2 across runs of one layer: a few decades, lognormal
    "lognormal": lambda rng: rng.lognormal(-15, 2.0, 20_000),
    # identical layers (0) among rounding ones
    "zeros-and-tiny": lambda rng: np.where(
        rng.random(5_000) < 0.3, 0.0, rng.uniform(1e-9, 1e-6, 5_000)
    ),
    # sqnr_db: negative and positive, with identical layers at +inf
    "signed-with-inf": lambda rng: np.concatenate(
        [rng.normal(20, 40, 3_000), np.full(200, np.inf), np.full(5, -np.inf)]
    ),
    "subnormal-to-huge": lambda rng: 10.0 ** rng.uniform(-300, 300, 4_000),
}


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_every_quantile_is_within_alpha_of_the_exact_one(name: str) -> None:
    values = DISTRIBUTIONS[name](np.random.default_rng(7))
    sketch = QuantileSketch()
    sketch.add(values)
    for fraction in FRACTIONS:
        assert within_bound(sketch.quantile(fraction), exact(values, fraction)), fraction
    assert sketch.count == values.size
    assert sketch.high == values.max() and sketch.low == values.min()


def test_added_in_pieces_merged_and_stored_is_the_same_sketch() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(-10, 1.5, 9_000)
    whole = QuantileSketch()
    whole.add(values)
    pieces = QuantileSketch()
    for chunk in np.array_split(values, 37):
        part = QuantileSketch()
        part.add(chunk)
        pieces.merge(QuantileSketch.from_json(part.as_json()))
    assert pieces.positive == whole.positive
    assert pieces.count == whole.count
    assert pieces.mean == pytest.approx(values.mean(), rel=1e-12)
    for fraction in FRACTIONS:
        assert pieces.quantile(fraction) == whole.quantile(fraction)


def test_small_counts_hit_the_exact_rank() -> None:
    """With two values the median is the smaller one (rank ceil(0.5·2) = 1), p95 the larger."""
    sketch = QuantileSketch()
    sketch.add(np.array([3.0e-7, 1.0e-3, np.nan]))
    assert sketch.count == 2
    assert within_bound(sketch.quantile(0.5), 3.0e-7)
    assert within_bound(sketch.quantile(0.95), 1.0e-3)
    assert QuantileSketch().quantile(0.5) is None
