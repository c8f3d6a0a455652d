"""`driftbench demo`: the service end to end on the embedded default, then a clean exit.

It starts the API in this process (SQLite and files under DRIFTBENCH_DATA_DIR, jobs
in the in-process pool), uploads dense10x50 over HTTP like any client, runs it on
every available backend and prints the per-layer tables it reads back from the API.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from app.tables import layer_table
from workers.examples import write_example

POLL_S = 0.5


def _wait_done(client: httpx.Client, run_id: int, timeout_s: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in ("done", "failed"):
            return run
        time.sleep(POLL_S)
    raise TimeoutError(f"run {run_id} did not finish within {timeout_s:.0f} s")


def run_demo(example_dir: Any) -> int:
    # Bound here, on a port the OS picks, and handed to the server thread: a port found
    # free first and bound later could be taken by another process in between.
    listener = socket.create_server(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config("app.main:app", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                return 1
            time.sleep(0.05)
        with httpx.Client(base_url=base, timeout=600) as client:
            path = write_example("dense10x50", example_dir)
            with path.open("rb") as stream:
                model = client.post(
                    "/api/models", files={"file": (path.name, stream)}, data={"tags": "demo"}
                ).json()
            print(f"uploaded {model['name']} (model {model['id']}, {model['architecture_label']})")
            inputs = client.post(
                f"/api/models/{model['id']}/inputs", json={"kind": "uniform", "batch": 8, "seed": 0}
            ).json()
            run = client.post(
                "/api/runs",
                json={
                    "model_id": model["id"],
                    "input_set_id": inputs["id"],
                    "modes": ["accumulated", "isolated"],
                    "repeats": 2,
                },
            ).json()
            print(f"run {run['id']}: {', '.join(b['backend'] for b in run['backend_runs'])}")
            run = _wait_done(client, run["id"])
            for backend_run in run["backend_runs"]:
                detail = f" ({backend_run['reason']})" if backend_run["reason"] else ""
                print(f"  {backend_run['backend']}: {backend_run['status']}{detail}")
            for mode in run["modes"]:
                result = client.get(
                    f"/api/runs/{run['id']}/divergence", params={"mode": mode}
                ).json()
                for backend in result["drift_start"]:
                    rows = [row for row in result["rows"] if row["backend"] == backend]
                    print()
                    print(layer_table(f"{backend} vs {result['against']} ({mode})", rows))
            print()
            print(
                f"dashboard:  {base}/runs/{run['id']}   (browser vs Python: "
                f"{base}/runs/{run['id']}/browser)"
            )
            print(f"API:        {base}/api   (OpenAPI docs at {base}/docs)")
            print(f"this run:   {base}/api/runs/{run['id']}")
            print(f"divergence: {base}/api/runs/{run['id']}/divergence?format=csv")
            print(
                "(the demo server stops now; `driftbench serve` keeps one running with the "
                "same data)"
            )
            return 0 if run["status"] == "done" else 1
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
