"""`driftbench demo`: the service end to end on the embedded default, then a clean exit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import parse_tables


def test_demo_runs_the_service_end_to_end(tmp_path: Path) -> None:
    """`make demo`'s command: service up, dense10x50 over HTTP on every backend, clean exit."""
    env = {**os.environ, "DRIFTBENCH_DATA_DIR": str(tmp_path / "data")}
    driftbench = Path(sys.executable).with_name("driftbench")
    completed = subprocess.run(
        [str(driftbench), "demo"], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    tables = parse_tables(completed.stdout)
    expected = {
        f"{backend} vs numpy-f64 ({mode})"
        for mode in ("accumulated", "isolated")
        for backend in (
            "keras-cpu",
            "numpy",
            "tfjs-cpu",
            "tfjs-wasm",
            "tfjs-webgl",
            "tfjs-webgl-f16",
        )
    }
    assert set(tables) == expected
    assert all(len(rows) == 10 for rows in tables.values())
    # Diagnosed in the service's comparison job: the float32 backends need no explanation,
    # float16 textures are named as such wherever a layer's own error is beyond rounding.
    for title, rows in tables.items():
        explained = {row["explained_by"] for row in rows}
        assert explained <= ({"-", "float16-activations"} if "f16" in title else {"-"}), title
    assert "float16-activations" in completed.stdout
    lines = completed.stdout.splitlines()
    assert re.fullmatch(r"uploaded dense10x50 \(model 1, .+\)", lines[0]), lines[0]
    assert lines[1].startswith("run 1: numpy-f64, keras-cpu, numpy")
    statuses = [line for line in lines if line.startswith("  ")]
    assert len(statuses) == len(lines[1].split(": ", 1)[1].split(", "))
    status_line = re.compile(r"  [\w.-]+: (done|skipped|unsupported)( \(.+\))?")
    assert all(status_line.fullmatch(line) for line in statuses), statuses
    base = re.fullmatch(r"API:        (http://127\.0\.0\.1:\d+)/api   \(.+\)", lines[-4])
    assert base is not None, lines[-5:]
    url = base.group(1)
    assert lines[-5] == f"dashboard:  {url}/runs/1   (browser vs Python: {url}/runs/1/browser)"
    assert lines[-3] == f"this run:   {url}/api/runs/1"
    assert lines[-2] == f"divergence: {url}/api/runs/1/divergence?format=csv"
    assert lines[-1].startswith("(the demo server stops now;")
    assert (tmp_path / "data" / "driftbench.db").exists()
