"""Plain-text tables for the terminal: what `driftbench run` and `demo` print."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from workers.engine.compare import Comparison
from workers.engine.metrics import DRIFT_VERDICTS
from workers.engine.results import BackendResult
from workers.engine.status import BackendStatus

TABLE_COLUMNS = (
    "layer",
    "class",
    "n_diff",
    "mean_abs",
    "max_abs",
    "rel_l2",
    "max_ulp",
    "verdict",
    "local_rel_l2",
    "explained_by",
)


def format_number(value: float | int | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | str):
        return str(value)
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return "0" if value == 0 else f"{value:.3e}"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def layer_table(title: str, rows: Sequence[dict[str, Any]]) -> str:
    """One backend's rows (dicts with the metric names as keys) and where drift starts."""
    cells = [
        (
            row["layer"],
            row["class_name"],
            *(
                format_number(row[key])
                for key in ("n_diff", "mean_abs", "max_abs", "rel_l2", "max_ulp")
            ),
            row["verdict"],
            format_number(row.get("local_rel_l2")),
            row.get("explained_by") or "-",
        )
        for row in rows
    ]
    start = next((row for row in rows if row["verdict"] in DRIFT_VERDICTS), None)
    if start is None:
        verdict_line = "drift starts: nowhere (every layer identical or within rounding)"
    else:
        verdict_line = (
            f"drift starts: layer {start['layer']} ({start['class_name']}), {start['verdict']}"
        )
        if start.get("explained_by"):
            verdict_line += f"; explained by: {start['explained_by']}"
    return f"{title}\n{render_table(TABLE_COLUMNS, cells)}\n{verdict_line}"


def comparison_table(comparison: Comparison) -> str:
    rows = [row.as_dict() for row in comparison.layers]
    table = layer_table(f"{comparison.backend} vs {comparison.against} ({comparison.mode})", rows)
    if comparison.not_provided:
        table += f"\nnot provided (not compared): {', '.join(comparison.not_provided)}"
    return table


def backend_line(result: BackendResult) -> str:
    line = f"{result.backend}: {result.status}"
    if result.reason:
        line += f" ({result.reason})"
    if result.status == BackendStatus.DONE and "accumulated" in result.timings:
        line += f", {result.timings['accumulated'] * 1000:.1f} ms per run"
        if result.deterministic is not None:
            verdict = "deterministic" if result.deterministic else "NOT deterministic"
            line += f", {verdict} (largest spread {format_number(result.repeat_spread)})"
    return line


def amplification_line(accumulated: Comparison, isolated: Comparison) -> str:
    """Accumulated over isolated error at the last layer: how much the network amplified."""
    last_accumulated = accumulated.layers[-1].divergence.rel_l2
    last_isolated = isolated.layers[-1].divergence.rel_l2
    ratio = "inf" if last_isolated == 0 else f"{last_accumulated / last_isolated:.1f}x"
    return (
        f"{accumulated.backend} vs {accumulated.against}: last layer rel_l2 "
        f"{format_number(last_accumulated)} accumulated / {format_number(last_isolated)} "
        f"isolated = {ratio} amplification of the layer's own error"
    )
