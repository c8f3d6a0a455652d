"""`driftbench check` as a CI job runs it: exit 0 / 1 / 2, a JUnit report a CI server
can parse with the right failure count, a Markdown summary; and the console around
it: progress lines when piped, no C++ log noise unless --verbose, --quiet."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest

from app.cli.main import main
from app.core.config import settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(settings, "data_dir", tmp_path / "data")
    return tmp_path / "data"


def check(*arguments: str) -> list[str]:
    return ["check", "dense10x50", "--generate", "uniform", "--batch", "4", *arguments]


def junit_cases(path: Path) -> dict[str, dict[str, str | None]]:
    """Each test case's name (suite / case) and its failure type, None when it passed."""
    root = ElementTree.parse(path).getroot()
    cases = {}
    for suite in root.iter("testsuite"):
        for case in suite.iter("testcase"):
            failure = case.find("failure")
            cases[f"{suite.get('name')} / {case.get('name')}"] = (
                None if failure is None else failure.get("type")
            )
        failed = sum(1 for case in suite.iter("testcase") if case.find("failure") is not None)
        assert suite.get("failures") == str(failed)
        assert suite.get("tests") == str(len(suite.findall("testcase")))
    assert root.get("failures") == str(sum(1 for v in cases.values() if v is not None))
    return cases


def test_within_rounding_passes_with_a_report(data_dir: Path, tmp_path: Path, capsys: Any) -> None:
    junit, markdown = tmp_path / "junit.xml", tmp_path / "summary.md"
    status = main(
        check("--backends", "numpy,keras-cpu", "--junit", str(junit), "--markdown", str(markdown))
    )
    assert status == 0
    assert "ok: 20 layers on 2 backend/mode pairs, none at or beyond mismatch" in (
        capsys.readouterr().out
    )
    cases = junit_cases(junit)
    assert len(cases) == 20 and set(cases.values()) == {None}
    assert "numpy (accumulated) vs numpy-f64 / 001 dense_1 (Dense)" in cases
    summary = markdown.read_text()
    assert summary.startswith("## driftbench check: dense10x50 — passed")
    assert "| keras-cpu | accumulated | 10 |" in summary


def test_float16_fails_reduced_precision_on_every_layer(
    data_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    """float16 weights move every Dense layer beyond float32 rounding: with
    --fail-on reduced-precision each of the ten fails, with --fail-on mismatch none."""
    junit, markdown = tmp_path / "junit.xml", tmp_path / "summary.md"
    status = main(
        check(
            "--backends",
            "tflite-f16",
            "--fail-on",
            "reduced-precision",
            "--junit",
            str(junit),
            "--markdown",
            str(markdown),
        )
    )
    assert status == 1
    printed = capsys.readouterr().out.splitlines()
    failing = [line for line in printed if line.startswith("FAIL ")]
    assert len(failing) == 10
    assert failing[0] == next(
        line for line in failing if "layer dense_1 (Dense) reduced-precision" in line
    )
    # The diagnosis rides along; the first layer's own error is float16 weights exactly.
    assert all("; explained by: " in line for line in failing)
    assert failing[0].endswith("explained by: float16-weights")
    cases = junit_cases(junit)
    assert len(cases) == 10 and set(cases.values()) == {"reduced-precision"}
    summary = markdown.read_text()
    assert "FAILED (fail on reduced-precision or worse)" in summary
    assert summary.count("\n- tflite-f16 (accumulated): layer dense_") == 10
    assert main(check("--backends", "tflite-f16", "--fail-on", "mismatch")) == 0


def test_bad_input_exits_2(data_dir: Path, tmp_path: Path, capsys: Any) -> None:
    assert main(check("--backends", "numpy,tpu")) == 2
    assert "unknown backend 'tpu'" in capsys.readouterr().err
    missing = ["check", str(tmp_path / "none.keras"), "--backends", "numpy"]
    assert main(missing) == 2
    with pytest.raises(SystemExit) as refused:
        main(check("--fail-on", "sometimes"))
    assert refused.value.code == 2


def test_nothing_compared_is_no_pass(data_dir: Path, tmp_path: Path, capsys: Any) -> None:
    """A reference that cannot run here (no GPU) leaves nothing to compare: exit 1, not a
    silent pass; a backend that cannot run beside others is reported and skipped."""
    assert main(check("--backends", "numpy", "--against", "keras-gpu")) == 1
    printed = capsys.readouterr().out
    assert "FAIL keras-gpu: the reference did not run (skipped: " in printed
    junit = tmp_path / "junit.xml"
    assert main(check("--backends", "numpy,keras-gpu", "--junit", str(junit))) == 0
    assert "not run: keras-gpu skipped: " in capsys.readouterr().out
    root = ElementTree.parse(junit).getroot()
    [gpu] = [suite for suite in root.iter("testsuite") if suite.get("name") == "keras-gpu"]
    assert (gpu.get("skipped"), gpu.get("failures")) == ("1", "0")
    assert gpu.find("testcase/skipped") is not None
    assert root.get("failures") == "0"


def run_console(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DRIFTBENCH_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [str(Path(sys.executable).with_name("driftbench")), *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_console_is_quiet_about_native_logs_and_shows_progress(tmp_path: Path) -> None:
    """Piped: a plain progress line per backend on stderr, none of TensorFlow's C++
    start-up lines (I0000 ..., the cuInit error) unless --verbose; --quiet prints the
    tables alone."""
    plain = run_console(tmp_path, "run", "dense10x50", "--backends", "numpy,keras-cpu")
    assert plain.returncode == 0, plain.stderr
    assert "numpy-f64: done" in plain.stderr and "keras-cpu: done" in plain.stderr
    assert "keras-cpu: running" in plain.stderr
    assert "I0000" not in plain.stderr and "cuInit" not in plain.stderr
    verbose = run_console(
        tmp_path, "run", "dense10x50", "--backends", "numpy,keras-cpu", "--verbose"
    )
    assert verbose.returncode == 0
    assert "I0000" in verbose.stderr or "absl::InitializeLog" in verbose.stderr
    quiet = run_console(tmp_path, "run", "dense10x50", "--backends", "numpy", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.lstrip().startswith("numpy vs numpy-f64 (accumulated)")
