"""Running the service from outside, as a user or an operator would: one place for the
tests, `driftbench demo` and `driftbench bench`.

`LiveServer` is a real `driftbench serve` child process on a port it binds itself
(read back from its --port-file: choosing a free port here and passing it on would
race with any other process taking it meanwhile); `LiveWorker` a real `driftbench
worker`; `driftbench.client.Client` speaks to them. `postgres_database` makes a
throwaway PostgreSQL database, `private_redis` a broker of our own.

Nothing here imports the service itself: it only starts it and talks to it.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import httpx
from sqlalchemy.engine import make_url

from driftbench.client import Client, wait_for

# Numbers the log (and port) files of the servers and workers started by one process,
# so several of them can share a data dir.
_file_numbers = itertools.count(1)


def _driftbench(*args: str) -> list[str]:
    """The `driftbench` command line, run by this interpreter."""
    return [sys.executable, "-m", "app.cli", *args]


def _log_tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:] if log_path.exists() else "(no log)"


def answers_healthz(url: str) -> bool:
    """True once the server at `url` is up and its database answers."""
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_serving(
    process: subprocess.Popen[bytes], port_file: Path, log_path: Path, timeout_s: float
) -> str:
    """The URL of a `driftbench serve --port 0 --port-file port_file` child, once it
    answers /healthz. A server that exits or does not come up in time is reported with
    its log's tail."""
    seen: dict[str, str] = {}

    def serving() -> str | None:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with status {process.returncode}: {_log_tail(log_path)}"
            )
        if "url" not in seen and port_file.exists() and port_file.read_text().strip():
            seen["url"] = f"http://127.0.0.1:{int(port_file.read_text())}"
        return seen["url"] if "url" in seen and answers_healthz(seen["url"]) else None

    try:
        return wait_for(serving, timeout_s, "the server", interval_s=0.1)
    except TimeoutError:
        awaited = f"answer {seen['url']}/healthz" if seen else f"write its port to {port_file}"
        raise RuntimeError(
            f"server did not {awaited} within {timeout_s:g} s: {_log_tail(log_path)}"
        ) from None


@contextmanager
def postgres_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database next to `admin_url`'s (a psycopg URL such as
    postgresql://postgres@127.0.0.1:5432/postgres), as a SQLAlchemy URL; dropped
    afterwards, connections and all. ConnectionError when that server does not answer."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        where = make_url(admin_url).render_as_string(hide_password=True)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "no answer"
        raise ConnectionError(f"PostgreSQL at {where} cannot be used: {reason}") from None
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# No TCP port, nothing saved to disk, in the foreground (so terminate() stops it).
REDIS_OPTIONS = ("--port", "0", "--save", "", "--appendonly", "no", "--daemonize", "no")


@contextmanager
def private_redis() -> Iterator[str]:
    """The broker URL of a redis-server of our own on a unix socket, stopped afterwards:
    a shared Redis could hold other users' queues and heartbeats in any database number
    we pick."""
    import redis

    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed: `make install` installs it")
    # A unix socket path holds at most 107 bytes: a short /tmp directory.
    with tempfile.TemporaryDirectory(prefix="driftbench-redis-") as directory:
        socket_path, log_path = Path(directory) / "redis.sock", Path(directory) / "redis.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [executable, *REDIS_OPTIONS, "--unixsocket", str(socket_path), "--dir", directory],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(unix_socket_path=str(socket_path))

        def answers_ping() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with status {process.returncode}: {_log_tail(log_path)}"
                )
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        broker = f"redis+socket://{socket_path}"
        try:
            wait_for(answers_ping, timeout_s=30, what=f"redis-server to answer PING at {broker}")
            yield broker
        finally:
            client.close()
            process.terminate()
            process.wait(timeout=30)


class ManagedProcess:
    """A child process of ours: stopped politely, or killed as in a crash."""

    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the process has not been started")
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def _spawn(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def _environment(data_dir: Path, settings: dict[str, str]) -> dict[str, str]:
    """This process's environment with the data dir and `settings` (by field name)."""
    return {
        **os.environ,
        "DRIFTBENCH_DATA_DIR": str(data_dir),
        **{f"DRIFTBENCH_{name.upper()}": value for name, value in settings.items()},
    }


class LiveServer(ManagedProcess):
    """`driftbench serve --port 0` with its own data dir, database and settings (field
    names of app.core.config.Settings, values as the environment would give them).
    Every start binds a new port, so `url` changes across a kill() and start(). As a
    context manager it is started on entry and stopped on exit."""

    def __init__(self, data_dir: Path, database_url: str | None = None, **settings: str) -> None:
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

    def start(self, timeout_s: float = 120) -> LiveServer:
        """Start the server and wait until it answers; one that does not is stopped."""
        self.start_in_background()
        try:
            self.wait_until_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def start_in_background(self) -> None:
        env = _environment(self.data_dir, self.settings)
        if self.database_url:
            env["DRIFTBENCH_DATABASE_URL"] = self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._url = None
        self.port_file.unlink(missing_ok=True)
        command = _driftbench(
            "serve", "--port", "0", "--port-file", str(self.port_file), "--log-level", "warning"
        )
        self._spawn(command, env, self.log_path)

    def wait_until_healthy(self, timeout_s: float) -> None:
        assert self.process is not None, "start_in_background() first"
        self._url = wait_until_serving(self.process, self.port_file, self.log_path, timeout_s)

    def client(self, timeout_s: float = 120) -> Client:
        return Client(self.url, timeout=timeout_s)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LiveWorker(ManagedProcess):
    """`driftbench worker --queues ...` on a shared data dir; `env` holds the cluster's
    DRIFTBENCH_* variables (broker, database, executor)."""

    def __init__(self, data_dir: Path, env: dict[str, str], queues: str) -> None:
        self.data_dir = data_dir
        self.env = {**_environment(data_dir, {}), **env}
        self.queues = queues
        self.log_path = data_dir / f"worker-{queues.replace(',', '-')}-{next(_file_numbers)}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LiveWorker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = _driftbench("worker", "--queues", self.queues, "--log-level", "warning")
        self._spawn(command, self.env, self.log_path)
        return self
