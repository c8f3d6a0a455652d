"""A job that runs out of memory fails with the reason; the server that ran it lives on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.app.test_restart import upload_and_queue
from tests.live_server import LiveServer, wait_for_run

ADDRESS_SPACE = 8 * 1024**3


def test_out_of_memory_job_fails_and_the_next_one_runs(keras: Any, tmp_path: Path) -> None:
    wide = tmp_path / "wide.keras"
    keras.Sequential([keras.Input((1,), name="x"), keras.layers.Dense(1_000_000)]).save(wide)
    small = tmp_path / "small.keras"
    keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2)]).save(small)
    server = LiveServer(tmp_path / "data", None)
    server.address_space_limit = ADDRESS_SPACE  # batch 4096 x 1e6 float32 needs 16 GB
    server.start()
    try:
        with server.client() as client:
            pid = server.process.pid if server.process else None
            huge_run = wait_for_run(
                client, upload_and_queue(client, wide, ["numpy", "keras-cpu"], 4096)
            )
            small_run = wait_for_run(client, upload_and_queue(client, small, ["numpy"], 4))
            assert client.get("/healthz").status_code == 200
        assert server.process is not None and server.process.pid == pid
        assert server.process.poll() is None
    finally:
        server.stop()
    reasons = {b["backend"]: b["reason"] for b in huge_run["backend_runs"]}
    statuses = {b["backend"]: b["status"] for b in huge_run["backend_runs"]}
    assert statuses == {"numpy-f64": "failed", "numpy": "failed", "keras-cpu": "failed"}
    assert reasons["numpy-f64"] == (
        "out of memory: Unable to allocate 30.5 GiB for an array with shape "
        "(4096, 1000000) and data type float64"
    )
    assert reasons["keras-cpu"].startswith(
        "out of memory: OOM when allocating tensor with shape[256,1000000]"  # Keras batches by 256
    )
    assert "\n" not in reasons["keras-cpu"]
    assert small_run["status"] == "done"
    assert {b["status"] for b in small_run["backend_runs"]} == {"done"}
