"""A `driftbench serve` child process for the benchmarks that go through HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
