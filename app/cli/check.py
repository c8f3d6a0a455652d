"""`driftbench check`: "is this difference acceptable?" as a CI gate.

A run like `driftbench run`, judged: every layer of every backend against the
`--fail-on` verdict (at it or beyond fails), written as a JUnit report (one test case
per backend x mode x layer, so a CI server lists the failing layers) and a Markdown
summary for a job page. The verdicts are the comparison's own, precision-aware ones:
a quantized backend fails `--fail-on mismatch` only where a layer computes worse than
its precision allows.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from workers.engine.compare import Comparison, LayerDrift
from workers.engine.metrics import DRIFT_VERDICTS, VERDICTS
from workers.engine.results import BackendResult
from workers.engine.status import BackendStatus

# How bad each verdict is (the engine's own order): `--fail-on V` fails every layer at V
# or beyond.
SEVERITY = {verdict: rank for rank, verdict in enumerate(VERDICTS)}
FAIL_ON = DRIFT_VERDICTS
# What XML 1.0 cannot carry (a crash reason with terminal colour codes).
NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


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
    """Whether a layer with `verdict` fails the gate set at `fail_on`."""
    return SEVERITY[verdict] >= SEVERITY[fail_on]


def failures(comparisons: Sequence[Comparison], fail_on: str) -> list[Failure]:
    return [
        Failure(comparison.backend, comparison.mode, row)
        for comparison in comparisons
        for row in comparison.layers
        if fails(row.divergence.verdict, fail_on)
    ]


def failed_backends(results: dict[str, BackendResult], reference: str) -> dict[str, str]:
    """What stops the gate besides a layer: a backend that crashed, and a reference that
    did not run (then nothing was compared, and passing would say nothing). Other
    unsupported and skipped backends (no GPU here) are reported, not failed."""
    failed = {
        backend: f"the backend failed: {result.reason or 'no reason given'}"
        for backend, result in results.items()
        if result.status == BackendStatus.FAILED
    }
    source = results.get(reference)
    if source is None or source.status != BackendStatus.DONE:
        status = "missing" if source is None else f"{source.status}: {source.reason}"
        failed[reference] = f"the reference did not run ({status}): nothing was compared"
    return failed


def _xml_text(text: str) -> str:
    return NOT_XML.sub("", text)


def junit_xml(
    comparisons: Sequence[Comparison],
    results: dict[str, BackendResult],
    fail_on: str,
    stopped: dict[str, str],
) -> str:
    """One <testsuite> per backend and mode, one <testcase> per layer; a backend that
    stopped the gate (`failed_backends`) is one failing case of its own, one that could
    not run here a skipped case."""
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
            case.set("time", "0")
            ElementTree.SubElement(case, "system-out").text = (
                f"verdict {drift.verdict}; rel_l2 {drift.rel_l2:.3e}; max_abs {drift.max_abs:.3e}"
                + (f"; explained by {row.explained_by}" if row.explained_by else "")
            )
            if fails(drift.verdict, fail_on):
                failed += 1
                ElementTree.SubElement(
                    case,
                    "failure",
                    message=_xml_text(Failure(comparison.backend, comparison.mode, row).message),
                    type=drift.verdict,
                )
        suite.set("tests", str(len(comparison.layers)))
        suite.set("failures", str(failed))
        suite.set("errors", "0")
        suite.set("skipped", "0")
        suite.set("time", "0")
    not_run = {
        backend: f"{result.status}: {result.reason}"
        for backend, result in results.items()
        if result.status in (BackendStatus.UNSUPPORTED, BackendStatus.SKIPPED)
    }
    for backend, reason in {**not_run, **stopped}.items():
        stops = backend in stopped
        suite = ElementTree.SubElement(
            root,
            "testsuite",
            name=backend,
            tests="1",
            failures="1" if stops else "0",
            errors="0",
            skipped="0" if stops else "1",
            time="0",
        )
        case = ElementTree.SubElement(suite, "testcase", classname=backend, name="run", time="0")
        outcome = "failure" if stops else "skipped"
        ElementTree.SubElement(case, outcome, message=_xml_text(reason), type=outcome)
    total = root.findall("testsuite")
    root.set("tests", str(sum(int(s.get("tests", "0")) for s in total)))
    root.set("failures", str(sum(int(s.get("failures", "0")) for s in total)))
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _cell(text: str) -> str:
    """One Markdown table cell: no line breaks, no column separators."""
    return " ".join(text.split()).replace("|", "\\|")


def markdown_summary(
    model: str,
    comparisons: Sequence[Comparison],
    results: dict[str, BackendResult],
    fail_on: str,
    stopped: dict[str, str],
) -> str:
    """What a CI job page shows: passed or not, a line per backend and mode, the
    failing layers with their diagnosis."""
    found = failures(comparisons, fail_on)
    passed = not found and not stopped
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
            reason = _cell(f"{result.status}: {result.reason or 'no reason given'}")
            lines.append(f"| {backend} | - | - | {reason} | - | - |")
    if found or stopped:
        lines += ["", "### Failing", ""]
        lines += [f"- {failure.message}" for failure in found]
        lines += [f"- {backend}: {_cell(reason)}" for backend, reason in stopped.items()]
    return "\n".join(lines) + "\n"
