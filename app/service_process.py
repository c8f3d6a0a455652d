"""Running the service from outside, as a user or an operator would: one place for the
tests, `driftbench demo` and `driftbench bench`.

`LiveServer` is a real `driftbench serve` child process on a port it binds itself
(read back from its --port-file: choosing a free port here and passing it on would
race with any other process taking it meanwhile); `LiveWorker` a real `driftbench
worker`. `DriftbenchClient` speaks the HTTP API with typed calls that raise the
server's own `detail` on an error status, and is an `httpx.Client` for everything
else. `postgres_database` makes a throwaway PostgreSQL database.

Nothing here imports the service itself: it only starts it and talks to it.
"""

from __future__ import annotations

import io
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np

from workers.engine.status import RunStatus

T = TypeVar("T")
FINAL_RUN_STATUSES = tuple(status for status in RunStatus if status.is_final)
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
    afterwards, connections and all."""
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


class ServiceError(RuntimeError):
    """The server answered an error status; `detail` is its own explanation."""

    def __init__(self, method: str, path: str, status_code: int, detail: Any) -> None:
        super().__init__(f"{method} {path}: {status_code} {detail}")
        self.status_code = status_code
        self.detail = detail


def _checked(response: httpx.Response) -> Any:
    """The response's JSON body, or ServiceError with the server's `detail`."""
    if response.is_error:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        detail = body.get("detail", body) if isinstance(body, dict) else body
        request = response.request
        raise ServiceError(request.method, request.url.path, response.status_code, detail)
    return response.json()


def wait_for(
    condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """Call `condition` every `interval_s` until it returns something truthy, and return
    that; after `timeout_s`, TimeoutError naming `what` was awaited. An exception raised
    by `condition` ends the wait at once (e.g. the process it waits on has exited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def wait_for_run(
    client: httpx.Client, run_id: int, timeout_s: float = 300, poll_s: float = 0.2
) -> dict[str, Any]:
    """The run once it is done or failed; TimeoutError with the status it was last in."""
    last: dict[str, Any] = {}

    def finished() -> dict[str, Any] | None:
        last.update(_checked(client.get(f"/api/runs/{run_id}")))
        return dict(last) if last["status"] in FINAL_RUN_STATUSES else None

    try:
        return wait_for(finished, timeout_s, f"run {run_id} to finish", poll_s)
    except TimeoutError as error:
        raise TimeoutError(f"{error} (still {last.get('status')})") from None


def wait_until_available(
    client: httpx.Client, backends: Iterable[str], timeout_s: float = 90
) -> None:
    """Return once /api/backends says every one of `backends` can run (a worker serving
    its queue has reported in); TimeoutError with what it said last otherwise."""
    wanted = list(backends)
    available: dict[str, bool] = {}

    def all_available() -> bool:
        listed = _checked(client.get("/api/backends"))["data"]
        available.update({backend["id"]: backend["available"] for backend in listed})
        return all(available.get(backend) for backend in wanted)

    try:
        wait_for(all_available, timeout_s, f"backends {wanted} to be available", 0.3)
    except TimeoutError as error:
        raise TimeoutError(f"{error}: {available}") from None


class DriftbenchClient(httpx.Client):
    """The HTTP API with typed calls; an `httpx.Client` (base_url the server's) for any
    request the typed calls do not cover, or whose error status is what is looked at."""

    def post_model(
        self, path: Path, *, name: str | None = None, tags: str | Iterable[str] | None = None
    ) -> httpx.Response:
        """`POST /api/models` with the file, as sent: the raw answer (201, 200 for bytes
        already stored, or the refusal). `tags` as the form takes them (comma-separated)
        or as a list."""
        form = {}
        if name is not None:
            form["name"] = name
        if tags is not None:
            form["tags"] = tags if isinstance(tags, str) else ",".join(tags)
        with Path(path).open("rb") as stream:
            return self.post("/api/models", files={"file": (Path(path).name, stream)}, data=form)

    def upload_model(
        self, path: Path, *, name: str | None = None, tags: str | Iterable[str] | None = None
    ) -> dict[str, Any]:
        """The model as stored (an upload of bytes already stored gives that model)."""
        model: dict[str, Any] = _checked(self.post_model(path, name=name, tags=tags))
        return model

    def add_inputs(self, model_id: int, **generator: Any) -> dict[str, Any]:
        """A generated input set (`kind`, `batch`, `seed`, ... as in the API)."""
        inputs: dict[str, Any] = _checked(
            self.post(f"/api/models/{model_id}/inputs", json=generator)
        )
        return inputs

    def start_run(self, **body: Any) -> dict[str, Any]:
        """`POST /api/runs` with `body` (model_id, input_set_id, backends, modes, ...): the
        run as queued."""
        run: dict[str, Any] = _checked(self.post("/api/runs", json=body))
        return run

    def prepare_run(
        self, model_path: Path, backends: list[str], *, batch: int, **run: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Upload the model and generate uniform inputs of `batch` samples (the default
        seed): the model as stored, and the `POST /api/runs` body of a run of `backends`
        (and any other run field given) on them."""
        model = self.upload_model(model_path)
        inputs = self.add_inputs(model["id"], kind="uniform", batch=batch)
        body = {"model_id": model["id"], "input_set_id": inputs["id"], "backends": backends}
        return model, {**body, **run}

    def queue_run(
        self, model_path: Path, backends: list[str], *, batch: int, **run: Any
    ) -> dict[str, Any]:
        """`prepare_run`, then the run queued: the run as the API answered."""
        _, body = self.prepare_run(model_path, backends, batch=batch, **run)
        return self.start_run(**body)

    def get_run(self, run_id: int) -> dict[str, Any]:
        run: dict[str, Any] = _checked(self.get(f"/api/runs/{run_id}"))
        return run

    def wait_for_run(
        self, run_id: int, timeout_s: float = 300, poll_s: float = 0.2
    ) -> dict[str, Any]:
        return wait_for_run(self, run_id, timeout_s, poll_s)

    def divergence(self, run_id: int, **params: Any) -> dict[str, Any]:
        """`GET /api/runs/{id}/divergence` (against, mode, backend) as JSON."""
        answer: dict[str, Any] = _checked(self.get(f"/api/runs/{run_id}/divergence", params=params))
        return answer

    def compare(self, run_id: int, against: str) -> dict[str, Any]:
        """Compare the finished run's backends with `against` and store it (needed before
        reading a divergence against anything but the run's reference)."""
        answer: dict[str, Any] = _checked(
            self.post(f"/api/runs/{run_id}/comparisons", json={"against": against})
        )
        return answer

    def post_external(
        self,
        run_id: int,
        name: str,
        arrays: dict[str, Any],
        *,
        mode: str = "accumulated",
        note: str | None = None,
    ) -> httpx.Response:
        """`POST /api/runs/{id}/external`: a port's per-layer outputs (saved as an .npz
        here) as backend ext:<name>; the raw answer."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        form = {"name": name, "mode": mode, **({"note": note} if note else {})}
        return self.post(
            f"/api/runs/{run_id}/external",
            files={"file": ("outputs.npz", buffer.getvalue())},
            data=form,
        )

    def backends(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = _checked(self.get("/api/backends"))["data"]
        return listed


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

    def client(self, timeout_s: float = 120) -> DriftbenchClient:
        return DriftbenchClient(base_url=self.url, timeout=timeout_s)

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
