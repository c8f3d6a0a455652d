"""A `driftbench serve` child process for the benchmarks that go through HTTP."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from workers.process_tree import descendants


def answers_healthz(url: str) -> bool:
    """True once the server at `url` is up and its database answers."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _log_tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:] if log_path.exists() else "(no log)"


def wait_until_serving(
    process: subprocess.Popen[bytes], port_file: Path, log_path: Path, timeout_s: float
) -> str:
    """The URL of a `driftbench serve --port 0 --port-file port_file` child, once it
    answers /healthz. The port is the one the server reports having bound: choosing a free
    port here and passing it on would race with any other process taking it meanwhile.
    A server that exits or does not come up in time is reported with its log's tail."""
    deadline = time.monotonic() + timeout_s
    url: str | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with status {process.returncode}: {_log_tail(log_path)}"
            )
        if url is None and port_file.exists():
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
        if url is not None and answers_healthz(url):
            return url
        time.sleep(0.1)
    awaited = f"answer {url}/healthz" if url else f"write its port to {port_file}"
    raise RuntimeError(f"server did not {awaited} within {timeout_s:g} s: {_log_tail(log_path)}")


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
        return peak_rss_mib(self.pid)

    def job_processes_peak_rss_mib(self) -> dict[int, float]:
        """The same for each live descendant (job processes, their Chromium), by pid."""
        return {pid: peak_rss_mib(pid) for pid in descendants(self.pid)}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


@contextmanager
def served_app(
    data_dir: Path, database_url: str | None = None, **settings: str
) -> Iterator[Served]:
    """A server in embedded mode with its own data dir and settings; stopped on exit."""
    env = {**os.environ, "DRIFTBENCH_DATA_DIR": str(data_dir), "DRIFTBENCH_AUTH": "off"}
    if database_url:
        env["DRIFTBENCH_DATABASE_URL"] = database_url
    env.update({f"DRIFTBENCH_{name.upper()}": value for name, value in settings.items()})
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path, port_file = data_dir / "server.log", data_dir / "server.port"
    port_file.unlink(missing_ok=True)
    log = log_path.open("ab")
    command = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--port",
        "0",
        "--port-file",
        str(port_file),
    ]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield Served(wait_until_serving(process, port_file, log_path, timeout_s=120), process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
