"""A mergeable quantile sketch with a relative error bound (DDSketch's log buckets).

The drift aggregates keep, per depth, how many values fell in each bucket
(g^(i-1), g^i] with g = (1 + ALPHA) / (1 - ALPHA), instead of the values themselves.
Adding rows is adding counts, so a new run costs only its own rows; and the value
returned for a rank is the bucket's midpoint 2 g^i / (g + 1), which is within a
relative ALPHA of every value in that bucket, so of the exact nearest-rank value. Zeros
and infinities are counted exactly, negative values in buckets of their own, and
the result is clamped to the exact minimum and maximum kept beside the buckets.
NaN is left out, as SQL's NULL would be.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The relative error of every quantile: |returned - exact| <= ALPHA * |exact|.
ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)


def nearest_rank(count: int, fraction: float) -> int:
    """The 1-based rank of the smallest value with at least `fraction` of all at or below
    it (the nearest-rank percentile's rank)."""
    return max(1, min(count, math.ceil(count * fraction - 1e-9)))


def _bucket_counts(magnitudes: np.ndarray) -> Counter[int]:
    indices, counts = np.unique(
        np.ceil(np.log(magnitudes) / LOG_GAMMA).astype(np.int64), return_counts=True
    )
    return Counter(dict(zip(indices.tolist(), counts.tolist(), strict=True)))


def _midpoint(index: int) -> float:
    return 2 * GAMMA**index / (GAMMA + 1)


@dataclass
class QuantileSketch:
    """Count, sum, extremes and bucketed values of one column over many rows."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    zeros: int = 0
    below: int = 0  # -inf
    above: int = 0  # +inf
    positive: Counter[int] = field(default_factory=Counter)
    negative: Counter[int] = field(default_factory=Counter)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        if not values.size:
            return
        self.count += int(values.size)
        with np.errstate(invalid="ignore"):  # inf + -inf
            self.total += float(values.sum())
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        self.zeros += int(np.count_nonzero(values == 0))
        self.below += int(np.count_nonzero(values == -np.inf))
        self.above += int(np.count_nonzero(values == np.inf))
        finite = values[np.isfinite(values) & (values != 0)]
        for store, magnitudes in (
            (self.positive, finite[finite > 0]),
            (self.negative, -finite[finite < 0]),
        ):
            if magnitudes.size:
                store.update(_bucket_counts(magnitudes))

    def merge(self, other: QuantileSketch) -> None:
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)
        self.zeros += other.zeros
        self.below += other.below
        self.above += other.above
        self.positive.update(other.positive)
        self.negative.update(other.negative)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def quantile(self, fraction: float) -> float | None:
        """The nearest-rank value at `fraction`, within a relative ALPHA."""
        if not self.count:
            return None
        rank = nearest_rank(self.count, fraction)
        ordered: list[tuple[int, float]] = [(self.below, -math.inf)]
        ordered += [(self.negative[i], -_midpoint(i)) for i in sorted(self.negative, reverse=True)]
        ordered.append((self.zeros, 0.0))
        ordered += [(self.positive[i], _midpoint(i)) for i in sorted(self.positive)]
        ordered.append((self.above, math.inf))
        seen = 0
        for count, value in ordered:
            seen += count
            if seen >= rank:
                return min(max(value, self.low), self.high)
        return self.high

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total": _finite_or_text(self.total),
            "low": _finite_or_text(self.low),
            "high": _finite_or_text(self.high),
            "zeros": self.zeros,
            "below": self.below,
            "above": self.above,
            "positive": {str(k): v for k, v in self.positive.items()},
            "negative": {str(k): v for k, v in self.negative.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuantileSketch:
        return cls(
            count=data["count"],
            total=float(data["total"]),
            low=float(data["low"]),
            high=float(data["high"]),
            zeros=data["zeros"],
            below=data["below"],
            above=data["above"],
            positive=Counter({int(k): v for k, v in data["positive"].items()}),
            negative=Counter({int(k): v for k, v in data["negative"].items()}),
        )


def _finite_or_text(value: float) -> float | str:
    """JSON has no infinities: they are kept as the strings float() reads back."""
    return value if math.isfinite(value) else str(value)
