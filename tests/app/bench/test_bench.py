"""`driftbench bench` end to end on a small scale: it measures through a live server on
SQLite and PostgreSQL, reports each figure against its target, and says so in its
exit status. (What the figures are is the benchmark's business, not a test's.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("driftbench")), "bench", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_bench_queries_report_every_figure_with_its_target(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # Never idle beside the suite's other tests: waiting would take the 15 s limit.
    args = ("--runs", "40", "--query-seconds", "1", "--idle-wait-s", "0", "--json", str(out))
    done = bench("--only", "queries", *args)
    report = json.loads(out.read_text())
    figures = {figure["name"]: figure for figure in report["figures"]}
    timed = [f for f in figures.values() if f["target"] is not None]
    assert {f["name"].rsplit(", ", 1)[1] for f in timed} == {"sqlite", "postgresql"}
    assert len(timed) == 4 and all(f["unit"] == "ms" and f["target"] == 50.0 for f in timed)
    for figure in timed:
        assert 0 < figure["value"] < 60_000
        assert figure["met"] == (figure["value"] <= 50.0)
        # keras-cpu and numpy against the reference, numpy and numpy-f64 against keras-cpu
        # (compare_against's default), each over dense10x50's ten layers.
        assert figure["detail"]["rows_per_run"] == 40 and figure["detail"]["requests"] >= 2
        # Every stored run's rows were copied: 40 runs of 40 rows, before any landed.
        assert figure["detail"]["rows_stored"] == 40 * 40
        assert figure["detail"]["runs_landed"] >= 1  # the service was busy meanwhile
        assert figure["name"] in done.stdout
    assert report["idle_wait_s"] == {"queries": 0.0}
    assert done.returncode == (0 if all(f["met"] for f in timed) else 1), done.stdout


def test_unknown_part_is_refused() -> None:
    done = bench("--only", "keras,gpu")
    assert done.returncode == 2 and "unknown part(s) ['gpu']" in done.stdout
