"""Stored layer outputs are capped per backend run; the cap is reported and each pair is
compared over the samples both of its sides stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.service_process import LiveServer

CAP = 64 * 1024


def test_outputs_over_the_cap_keep_the_first_samples(example: Any, tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", None, max_stored_output_bytes=str(CAP))
    server.start()
    try:
        with server.client() as client:
            model = example("dense10x50").path
            run_id = client.queue_run(model, ["numpy", "keras-cpu"], batch=64)["id"]
            run = client.wait_for_run(run_id)
            rows = client.divergence(run_id)["rows"]
            against_keras = client.divergence(run_id, against="keras-cpu")["rows"]
    finally:
        server.stop()
    assert run["status"] == "done", run
    outputs = tmp_path / "data" / "outputs" / str(run_id)
    kept = {}
    for backend_run in run["backend_runs"]:
        path = outputs / f"{backend_run['backend']}.npz"
        assert path.stat().st_size <= CAP + 64 * 1024  # npz headers on top of the arrays
        with np.load(path) as stored:
            samples = {stored[key].shape[0] for key in stored.files}
        assert len(samples) == 1
        kept[backend_run["backend"]] = samples.pop()
        assert kept[backend_run["backend"]] < 64
        assert backend_run["status"] == "done"
        assert backend_run["reason"].startswith(
            f"outputs capped: stored the first {kept[backend_run['backend']]} of 64 samples"
        )
        assert "DRIFTBENCH_MAX_STORED_OUTPUT_BYTES" in backend_run["reason"]
    assert kept["numpy-f64"] < kept["numpy"]  # float64 outputs take twice the room
    widths = {row["layer"]: row["n"] for row in rows}
    assert len(rows) == 2 * 10
    assert all(n == kept["numpy-f64"] * 50 for n in widths.values()), widths
    # Each pair over what both of its sides stored: numpy against keras-cpu keeps more.
    by_numpy = [row["n"] for row in against_keras if row["backend"] == "numpy"]
    assert by_numpy == [min(kept["numpy"], kept["keras-cpu"]) * 50] * 10
    assert {row["verdict"] for row in rows} <= {"identical", "rounding"}
