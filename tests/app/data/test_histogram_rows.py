"""A divergence row stores its histogram's counts only; the API gives its edges again,
from max_abs and the bin count, as np.histogram makes them. Rows stored before then
still hold their edges, and give those."""

from __future__ import annotations

import numpy as np

from app.data.divergences import _rows_of, row_dict
from app.data.orm import LayerDivergence
from workers.engine.compare import Comparison, LayerDrift
from workers.engine.metrics import METRIC_NAMES, divergence


def _row(max_abs: float, histogram: dict[str, list[float]]) -> LayerDivergence:
    return LayerDivergence(
        run_id=1,
        model_id=1,
        architecture="arch",
        backend="numpy",
        against="numpy-f64",
        mode="accumulated",
        layer="dense",
        class_name="Dense",
        depth=1,
        verdict="rounding",
        histogram=histogram,
        **{**dict.fromkeys(METRIC_NAMES, 0), "max_abs": max_abs},
    )


def test_edges_come_back_as_np_histogram_makes_them() -> None:
    errors = np.random.default_rng(2).standard_normal(1000) * 3e-7
    bound = float(np.abs(errors).max())
    counts, edges = np.histogram(errors, bins=41, range=(-bound, bound))
    given = row_dict(_row(bound, {"counts": counts.tolist()}))["histogram"]
    assert given == {"edges": edges.tolist(), "counts": counts.tolist()}


def test_a_layer_without_error_has_one_bin_at_zero() -> None:
    given = row_dict(_row(0.0, {"counts": [640]}))["histogram"]
    assert given == {"edges": [-0.0, 0.0], "counts": [640]}


def test_a_row_stored_with_its_edges_gives_those() -> None:
    stored = {"edges": [-1.0, 0.0, 1.0], "counts": [1, 5]}
    assert row_dict(_row(1.0, dict(stored)))["histogram"] == stored


def test_a_stored_row_holds_the_counts_and_gives_back_the_edges() -> None:
    rng = np.random.default_rng(6)
    reference = rng.standard_normal((16, 10))
    measured = divergence((reference + rng.standard_normal((16, 10)) * 1e-6), reference)
    layer = LayerDrift(layer="dense", class_name="Dense", depth=1, divergence=measured)
    comparison = Comparison("numpy", "numpy-f64", "accumulated", [layer])
    [stored] = _rows_of(1, 1, "arch", [comparison])
    assert stored["histogram"] == {"counts": measured.hist_counts}
    given = row_dict(_row(stored["max_abs"], stored["histogram"]))["histogram"]
    assert given == {"edges": measured.hist_edges, "counts": measured.hist_counts}
