"""Twenty clients for a minute against a live embedded server: uploads, input sets, runs
and queries. No 5xx, every accepted run finishes, every result is stored.

The figures (requests, latency percentiles per kind, errors, runs) are written to
test-artifacts/load.md.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.service_process import LiveServer
from tests.support import randomize_weights

CLIENTS = 20
SECONDS = 60.0
RUN_EVERY_S = 10.0
BACKENDS = ["numpy", "keras-cpu"]
ARTIFACTS = Path("test-artifacts")


def stack_models(keras: Any, directory: Path, count: int) -> list[Path]:
    """Small Dense stacks of one architecture with different weights: one depth curve."""
    paths = []
    for seed in range(count):
        model = keras.Sequential(
            [keras.Input((8,), name="x"), *[keras.layers.Dense(8, name=f"d{i}") for i in range(4)]]
        )
        randomize_weights(model, seed)
        paths.append(directory / f"stack{seed}.keras")
        model.save(paths[-1])
    return paths


class Client(threading.Thread):
    """One simulated user: a seeded mix of writes and reads until the deadline."""

    def __init__(self, index: int, url: str, models: list[Path], deadline: float) -> None:
        super().__init__(daemon=True)
        self.rng = random.Random(index)
        self.http = httpx.Client(base_url=url, timeout=60)
        self.models = models
        self.deadline = deadline
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, int] = defaultdict(int)
        self.failures: list[str] = []
        self.runs: list[int] = []
        self.known: dict[str, int] = {}
        self.next_run = time.monotonic() + self.rng.uniform(0, RUN_EVERY_S)

    def call(self, kind: str, send: Callable[[], httpx.Response]) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = send()
        except httpx.HTTPError as error:
            self.failures.append(f"{kind}: {type(error).__name__}: {error}")
            return None
        self.latencies[kind].append(time.perf_counter() - started)
        self.statuses[f"{kind} {response.status_code}"] += 1
        if 400 <= response.status_code < 500 and kind != "upload":
            self.failures.append(f"{kind}: {response.status_code} {response.text[:200]}")
        if response.status_code >= 500:
            self.failures.append(f"{kind}: {response.status_code} {response.text[:200]}")
        return response

    def upload(self) -> None:
        path = self.rng.choice(self.models)
        content = path.read_bytes()
        response = self.call(
            "upload", lambda: self.http.post("/api/models", files={"file": (path.name, content)})
        )
        if response is not None and response.status_code in (200, 201):
            if self.known.get("model") != response.json()["id"]:
                self.known.pop("inputs", None)
            self.known["model"] = response.json()["id"]
            self.known["architecture"] = response.json()["architecture"]

    def inputs(self) -> None:
        model = self.known["model"]
        body = {"kind": "uniform", "batch": self.rng.randint(1, 8), "seed": self.rng.randint(0, 99)}
        response = self.call(
            "inputs", lambda: self.http.post(f"/api/models/{model}/inputs", json=body)
        )
        if response is not None and response.status_code == 201:
            self.known["inputs"] = response.json()["id"]

    def start_run(self) -> None:
        body = {
            "model_id": self.known["model"],
            "input_set_id": self.known["inputs"],
            "backends": BACKENDS,
        }
        response = self.call("run", lambda: self.http.post("/api/runs", json=body))
        if response is not None and response.status_code == 202:
            self.runs.append(response.json()["id"])
        self.next_run = time.monotonic() + RUN_EVERY_S

    def query(self) -> None:
        model = self.known["model"]
        paths = [
            "/api/models?limit=20",
            "/api/runs?limit=20",
            f"/api/models/{model}",
            f"/api/models/{model}/drift?backend=numpy",
            f"/api/drift/depth?architecture={self.known['architecture']}&backend=numpy",
            "/api/backends",
        ]
        if self.runs:
            paths += [f"/api/runs/{self.runs[-1]}", f"/api/runs/{self.runs[-1]}/divergence"]
        path = self.rng.choice(paths)
        self.call("query", lambda: self.http.get(path))

    def run(self) -> None:
        self.upload()
        while time.monotonic() < self.deadline:
            if "model" not in self.known or self.rng.random() < 0.05:
                self.upload()
            elif "inputs" not in self.known or self.rng.random() < 0.05:
                self.inputs()
            elif time.monotonic() >= self.next_run:
                self.start_run()
            else:
                self.query()
        self.http.close()


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def test_twenty_clients_for_a_minute(keras: Any, tmp_path: Path) -> None:
    models = stack_models(keras, tmp_path, 5)
    server = LiveServer(tmp_path / "data", None)
    server.start()
    try:
        deadline = time.monotonic() + SECONDS
        clients = [Client(i, server.url, models, deadline) for i in range(CLIENTS)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=SECONDS + 120)
        drain_started = time.monotonic()
        runs = [run_id for client in clients for run_id in client.runs]
        with server.client() as http:
            finished = [http.wait_for_run(run_id, timeout_s=600) for run_id in runs]
            drained_s = time.monotonic() - drain_started
            rows = {run["id"]: http.divergence(run["id"])["rows"] for run in finished}
    finally:
        server.stop()

    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, int] = defaultdict(int)
    for client in clients:
        for kind, values in client.latencies.items():
            latencies[kind] += values
        for status, count in client.statuses.items():
            statuses[status] += count
    failures = [failure for client in clients for failure in client.failures]
    every = [value for values in latencies.values() for value in values]
    table = [
        f"{CLIENTS} clients, {SECONDS:.0f} s, embedded server (SQLite, 1 local worker)",
        "",
        "| requests | count | p50 ms | p95 ms |",
        "|---|---|---|---|",
        *(
            f"| {kind} | {len(values)} | {percentile_ms(values, 50):.1f} | "
            f"{percentile_ms(values, 95):.1f} |"
            for kind, values in sorted(latencies.items())
        ),
        f"| all | {len(every)} | {percentile_ms(every, 50):.1f} | {percentile_ms(every, 95):.1f} |",
        "",
        f"answers: {dict(sorted(statuses.items()))}; transport errors, 4xx and 5xx: "
        f"{len(failures)}",
        f"runs accepted: {len(runs)}, done: {sum(r['status'] == 'done' for r in finished)}, "
        f"queue drained {drained_s:.1f} s after the clients stopped",
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.md").write_text("\n".join(table) + "\n")

    assert failures == [], failures[:3]
    assert not any(client.is_alive() for client in clients)
    assert len(every) >= CLIENTS * 10 and len(runs) >= CLIENTS
    assert [run["status"] for run in finished] == ["done"] * len(runs)
    for run in finished:
        assert {b["status"] for b in run["backend_runs"]} == {"done"}, run
        assert len(rows[run["id"]]) == len(BACKENDS) * 4, run["id"]
