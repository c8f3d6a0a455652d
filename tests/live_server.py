"""A real `driftbench serve` process on a port it binds itself, against SQLite or a fresh
PostgreSQL db."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.bench.served import postgres_database as bench_postgres_database
from app.bench.served import wait_until_serving

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Numbers the log (and port) files of the servers and workers of one test session.
_file_numbers = itertools.count(1)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the local PostgreSQL, dropped afterwards."""
    with bench_postgres_database(POSTGRES_ADMIN_URL, prefix="driftbench_test") as url:
        yield url


class ManagedProcess:
    """A child process the test owns: stopped politely, or killed as in a crash."""

    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class LiveServer(ManagedProcess):
    """`driftbench serve --port 0`: every start binds a new port, read from the port file
    the server writes, so `url` changes across a kill() and start()."""

    def __init__(self, data_dir: Path, database_url: str | None, **settings: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        number = next(_file_numbers)
        self.log_path = data_dir / f"server-{number}.log"
        self.port_file = data_dir / f"server-{number}.port"
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Where the running server answers; known once start() has returned."""
        if self._url is None:
            raise RuntimeError("the server has not reported its port yet: start() it first")
        return self._url

    def start(self, timeout_s: float = 90) -> None:
        self.start_in_background()
        self.wait_until_healthy(timeout_s)

    def start_in_background(self) -> None:
        env = {
            **os.environ,
            "DRIFTBENCH_DATA_DIR": str(self.data_dir),
            **{f"DRIFTBENCH_{k.upper()}": v for k, v in self.settings.items()},
        }
        if self.database_url:
            env["DRIFTBENCH_DATABASE_URL"] = self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._url = None
        self.port_file.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("driftbench")),
                "serve",
                "--port",
                "0",
                "--port-file",
                str(self.port_file),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_until_healthy(self, timeout_s: float) -> None:
        assert self.process is not None
        self._url = wait_until_serving(self.process, self.port_file, self.log_path, timeout_s)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)


def wait_for_run(client: httpx.Client, run_id: int, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in ("done", "failed"):
            return run
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} still {run['status']} after {timeout_s} s")


class LiveWorker(ManagedProcess):
    """A real `driftbench worker` process serving some queues."""

    def __init__(self, data_dir: Path, env: dict[str, str], queues: str) -> None:
        self.env = {**os.environ, "DRIFTBENCH_DATA_DIR": str(data_dir), **env}
        self.queues = queues
        self.log_path = data_dir / f"worker-{queues.replace(',', '-')}-{next(_file_numbers)}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LiveWorker:
        data_dir = Path(self.env["DRIFTBENCH_DATA_DIR"])
        data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("driftbench")),
                "worker",
                "--queues",
                self.queues,
                "--log-level",
                "warning",
            ],
            env=self.env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        return self


def wait_until_available(client: httpx.Client, backends: list[str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = {b["id"]: b["available"] for b in client.get("/api/backends").json()["data"]}
        if all(status[backend] for backend in backends):
            return
        time.sleep(0.3)
    raise TimeoutError(f"backends {backends} not available after {timeout_s} s: {status}")
