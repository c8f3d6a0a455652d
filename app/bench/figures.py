"""Timing helpers and the figures a benchmark reports, with their targets."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

# Timings, or pairs timed in turn, that a figure of short calls whose time moves on a
# shared machine takes at least: on a 2-core machine the median of `make bench`'s five
# moved by a fifth from one run to the next (a run of the service took 180-360 ms,
# tflite-int8 read 0.87-1.34x and diagnosis without a bug 2.13-2.52x).
LEAST_REPEATS = 20


def timed(call: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls, after `warmup` calls that are not counted."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def interleaved(
    measured: Callable[[], Any],
    baseline: Callable[[], Any],
    repeats: int,
    warmup: int = 1,
    warmup_s: float = math.inf,
) -> tuple[list[float], list[float]]:
    """Both timed in turn, after `warmup` calls of each in turn (fewer once they have
    taken `warmup_s` seconds, one at least), so that what the machine does meanwhile
    falls on both alike."""
    started = time.perf_counter()
    for _ in range(warmup):
        measured()
        baseline()
        if time.perf_counter() - started >= warmup_s:
            break
    pairs = [(timed(measured, 1, 0)[0], timed(baseline, 1, 0)[0]) for _ in range(repeats)]
    return [m for m, _ in pairs], [b for _, b in pairs]


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Figure:
    """One measured number: a ratio against its baseline, or a value with a unit."""

    name: str
    value: float
    unit: str
    target: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.value <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def ratio(name: str, measured: list[float], baseline: list[float], target: float | None) -> Figure:
    """The median of the service's times over the median of the baseline's."""
    return Figure(
        name=name,
        value=median(measured) / median(baseline),
        unit="x",
        target=target,
        detail={
            "measured_s": median(measured),
            "baseline_s": median(baseline),
            "measured_all_s": measured,
            "baseline_all_s": baseline,
        },
    )


def table(figures: list[Figure]) -> str:
    """The figures as a Markdown table, one line each, with the target and whether it held."""
    lines = ["| figure | value | target | met | measured / baseline |", "|---|---|---|---|---|"]
    for figure in figures:
        value = f"{figure.value:.3g} {figure.unit}".strip()
        target = "" if figure.target is None else f"≤ {figure.target:g} {figure.unit}".strip()
        met = {True: "yes", False: "NO", None: ""}[figure.met]
        seconds = ""
        if "measured_s" in figure.detail:
            seconds = (
                f"{figure.detail['measured_s'] * 1000:.1f} ms / "
                f"{figure.detail['baseline_s'] * 1000:.1f} ms"
            )
        lines.append(f"| {figure.name} | {value} | {target} | {met} | {seconds} |")
    return "\n".join(lines)
