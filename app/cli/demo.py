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

import uvicorn

from app.cli.terminal_tables import layer_table
from driftbench.client import Client
from workers.engine.examples import write_example
from workers.engine.status import RunStatus

POLL_S = 0.5  # how often the run is read while it goes on; its end is seen at once
RUN_TIMEOUT_S = 900


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
        with Client(base_url=base, timeout=600) as client:
            path = write_example("dense10x50", example_dir)
            model = client.upload_model(path, tags=["demo"])
            print(f"uploaded {model['name']} (model {model['id']}, {model['architecture_label']})")
            inputs = client.add_inputs(model["id"], kind="uniform", batch=8, seed=0)
            run = client.start_run(
                model_id=model["id"],
                input_set_id=inputs["id"],
                modes=["accumulated", "isolated"],
                repeats=2,
            )
            print(f"run {run['id']}: {', '.join(b['backend'] for b in run['backend_runs'])}")
            run = client.wait_for_run(run["id"], timeout_s=RUN_TIMEOUT_S, poll_s=POLL_S)
            for backend_run in run["backend_runs"]:
                detail = f" ({backend_run['reason']})" if backend_run["reason"] else ""
                print(f"  {backend_run['backend']}: {backend_run['status']}{detail}")
            for mode in run["modes"]:
                result = client.divergence(run["id"], mode=mode)
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
            return 0 if run["status"] == RunStatus.DONE else 1
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
