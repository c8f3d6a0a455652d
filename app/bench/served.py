"""A `driftbench serve` child process for the benchmarks that go through HTTP."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers_healthz(url: str) -> bool:
    """True once the server at `url` is up and its database answers."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def postgres_database(admin_url: str, prefix: str = "driftbench_bench") -> Iterator[str]:
    """A new, empty database next to `admin_url`'s (a psycopg URL), dropped afterwards."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_body(
    client: httpx.Client, model_path: Path, batch: int, backends: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Upload the model and seeded uniform inputs over HTTP; the model as stored and the
    `POST /api/runs` body for those backends."""
    with model_path.open("rb") as stream:
        model = client.post("/api/models", files={"file": (model_path.name, stream)}).json()
    input_id = client.post(
        f"/api/models/{model['id']}/inputs", json={"kind": "uniform", "batch": batch}
    ).json()["id"]
    return model, {"model_id": model["id"], "input_set_id": input_id, "backends": backends}


@dataclass(frozen=True)
class Served:
    url: str
    pid: int

    def peak_rss_mib(self) -> float:
        """The server process's high-water resident memory (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmHWM for process {self.pid}")


@contextmanager
def served_app(
    data_dir: Path, database_url: str | None = None, **settings: str
) -> Iterator[Served]:
    """A server in embedded mode with its own data dir and settings; stopped on exit."""
    port = _free_port()
    env = {**os.environ, "DRIFTBENCH_DATA_DIR": str(data_dir), "DRIFTBENCH_AUTH": "off"}
    if database_url:
        env["DRIFTBENCH_DATABASE_URL"] = database_url
    env.update({f"DRIFTBENCH_{name.upper()}": value for name, value in settings.items()})
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "server.log").open("ab")
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bench server did not start; see {data_dir / 'server.log'}")
            if answers_healthz(url):
                break
            time.sleep(0.1)
        yield Served(url, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
