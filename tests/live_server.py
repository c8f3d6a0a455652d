"""A real `driftbench serve` process on a free port, against SQLite or a fresh PostgreSQL db."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.bench.served import answers_healthz
from app.bench.served import postgres_database as bench_postgres_database

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    def __init__(self, data_dir: Path, database_url: str | None, **settings: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"
        self.address_space_limit: int | None = None

    def _limit_memory(self) -> None:
        """In the child before exec: cap its address space, so a huge job fails with
        MemoryError there instead of driving this machine into the kernel's OOM killer."""
        if self.address_space_limit is not None:
            limit = self.address_space_limit
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

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
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("driftbench")),
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._limit_memory,
        )

    def wait_until_healthy(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            if answers_healthz(self.url):
                return
            time.sleep(0.2)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

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
        self.log_path = data_dir / f"worker-{queues.replace(',', '-')}-{free_port()}.log"
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


def wait_until_backend_running(
    client: httpx.Client, run_id: int, backend: str, timeout_s: float = 120
) -> None:
    """Return once the run's backend job has started: the moment to crash something."""
    deadline = time.monotonic() + timeout_s
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = {
            b["backend"]: b["status"]
            for b in client.get(f"/api/runs/{run_id}").json()["backend_runs"]
        }
        if status[backend] == "running":
            return
        time.sleep(0.05)
    raise TimeoutError(f"{backend} of run {run_id} never ran within {timeout_s} s: {status}")


def wait_until_available(client: httpx.Client, backends: list[str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = {b["id"]: b["available"] for b in client.get("/api/backends").json()["data"]}
        if all(status[backend] for backend in backends):
            return
        time.sleep(0.3)
    raise TimeoutError(f"backends {backends} not available after {timeout_s} s: {status}")
