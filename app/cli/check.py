"""`driftbench check`: "is this difference acceptable?" as a CI gate.

A run like `driftbench run`, judged: every layer of every backend against the
`--fail-on` verdict (at it or beyond fails), written as a JUnit report (one test case
per backend x mode x layer, so a CI server lists the failing layers) and a Markdown
summary for a job page. The verdicts are the comparison's own, precision-aware ones:
a quantized backend fails `--fail-on mismatch` only where a layer computes worse than
its precision allows.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from workers.engine.compare import Comparison, LayerDrift
from workers.engine.results import BackendResult
from workers.engine.status import BackendStatus

# How bad each verdict is: `--fail-on V` fails every layer at V or beyond.
SEVERITY = {"identical": 0, "rounding": 1, "reduced-precision": 2, "mismatch": 3, "nonfinite": 4}
FAIL_ON = ("reduced-precision", "mismatch", "nonfinite")


@dataclass(frozen=True)
class Failure:
    backend: str
    mode: str
    row: LayerDrift

    @property
    def message(self) -> str:
        drift = self.row.divergence
        cause = self.row.explained_by
        return (
            f"{self.backend} ({self.mode}): layer {self.row.layer} ({self.row.class_name}) "
            f"{drift.verdict}, rel_l2 {drift.rel_l2:.3e}"
            + (f"; explained by: {cause}" if cause else "")
        )


def fails(verdict: str, fail_on: str) -> bool:
    return SEVERITY[verdict] >= SEVERITY[fail_on]


def failures(comparisons: Sequence[Comparison], fail_on: str) -> list[Failure]:
    return [
        Failure(comparison.backend, comparison.mode, row)
        for comparison in comparisons
        for row in comparison.layers
        if fails(row.divergence.verdict, fail_on)
    ]


def failed_backends(results: dict[str, BackendResult]) -> dict[str, str]:
    """Backends that crashed: a gate cannot pass on numbers it did not get. Unsupported
    and skipped backends (no GPU here) are reported, not failed."""
    return {
        backend: result.reason or "failed"
        for backend, result in results.items()
        if result.status == BackendStatus.FAILED
    }


def junit_xml(
    comparisons: Sequence[Comparison], results: dict[str, BackendResult], fail_on: str
) -> str:
    """One <testsuite> per backend and mode, one <testcase> per layer; a crashed
    backend is one failing case of its own."""
    root = ElementTree.Element("testsuites", name="driftbench check")
    for comparison in comparisons:
        suite = ElementTree.SubElement(
            root,
            "testsuite",
            name=f"{comparison.backend} ({comparison.mode}) vs {comparison.against}",
        )
        failed = 0
        for row in comparison.layers:
            case = ElementTree.SubElement(
                suite,
                "testcase",
                classname=f"{comparison.backend}.{comparison.mode}",
                name=f"{row.depth:03d} {row.layer} ({row.class_name})",
            )
            drift = row.divergence
            ElementTree.SubElement(case, "system-out").text = (
                f"verdict {drift.verdict}; rel_l2 {drift.rel_l2:.3e}; max_abs {drift.max_abs:.3e}"
                + (f"; explained by {row.explained_by}" if row.explained_by else "")
            )
            if fails(drift.verdict, fail_on):
                failed += 1
                ElementTree.SubElement(
                    case,
                    "failure",
                    message=Failure(comparison.backend, comparison.mode, row).message,
                    type=drift.verdict,
                )
        suite.set("tests", str(len(comparison.layers)))
        suite.set("failures", str(failed))
    for backend, reason in failed_backends(results).items():
        suite = ElementTree.SubElement(root, "testsuite", name=backend, tests="1", failures="1")
        case = ElementTree.SubElement(suite, "testcase", classname=backend, name="run")
        ElementTree.SubElement(case, "failure", message=reason, type="failed")
    total = root.findall("testsuite")
    root.set("tests", str(sum(int(s.get("tests", "0")) for s in total)))
    root.set("failures", str(sum(int(s.get("failures", "0")) for s in total)))
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def markdown_summary(
    model: str,
    comparisons: Sequence[Comparison],
    results: dict[str, BackendResult],
    fail_on: str,
) -> str:
    """What a CI job page shows: passed or not, a line per backend and mode, the
    failing layers with their diagnosis."""
    found = failures(comparisons, fail_on)
    crashed = failed_backends(results)
    passed = not found and not crashed
    lines = [
        f"## driftbench check: {model} — {'passed' if passed else 'FAILED'} "
        f"(fail on {fail_on} or worse)",
        "",
        "| backend | mode | layers | verdicts | drift starts | failing layers |",
        "|---|---|---|---|---|---|",
    ]
    for comparison in comparisons:
        counts = Counter(row.divergence.verdict for row in comparison.layers)
        verdicts = ", ".join(
            f"{counts[v]} {v}" for v in sorted(counts, key=SEVERITY.__getitem__) if counts[v]
        )
        start = comparison.drift_start
        where = (
            "nowhere"
            if start is None
            else f"{start.layer} ({start.divergence.verdict}"
            + (f", {start.explained_by})" if start.explained_by else ")")
        )
        failing = sum(
            1 for f in found if (f.backend, f.mode) == (comparison.backend, comparison.mode)
        )
        lines.append(
            f"| {comparison.backend} | {comparison.mode} | {len(comparison.layers)} | "
            f"{verdicts} | {where} | {failing} |"
        )
    for backend, result in results.items():
        if result.status != BackendStatus.DONE:
            lines.append(f"| {backend} | - | - | {result.status}: {result.reason} | - | - |")
    if found:
        lines += ["", "### Failing layers", ""]
        lines += [f"- {failure.message}" for failure in found]
    return "\n".join(lines) + "\n"
