"""The driftbench HTTP API from Python, for notebooks, scripts and CI jobs: the same
client the tests, `driftbench demo` and `driftbench bench` use.

    from driftbench.client import Client

    with Client("http://127.0.0.1:8000", token="...") as client:
        model = client.upload_model("model.keras")
        inputs = client.add_inputs(model["id"], kind="uniform", batch=8)
        run = client.start_run(model_id=model["id"], input_set_id=inputs["id"],
                               backends=["keras-cpu", "tflite-int8"])
        client.wait_for_run(run["id"])
        for row in client.rows(run["id"]):        # one plain dict per backend x layer
            print(row["backend"], row["layer"], row["verdict"], row["rel_l2"])
        values = client.layer_output(run["id"], "tflite-int8", "dense_1")  # numpy array

Every typed call raises `ServiceError` with the server's own `detail` on an error
status; a `Client` is also an `httpx.Client` (base URL the server's) for any other
request. Records are plain dicts and arrays numpy arrays: no pandas needed.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

T = TypeVar("T")
# A run is over once it is in one of these (workers.engine.status.RunStatus).
FINAL_RUN_STATUSES = ("done", "failed")
# The longest `GET /api/runs/{id}?wait_s=` the server waits (app/api/runs.py MAX_WAIT_S).
MAX_WAIT_S = 60.0
# How the API's JSON writes non-finite metrics.
NON_FINITE = frozenset({"inf", "-inf", "nan"})


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
    """The run once it is done or failed; TimeoutError with the status it was last in.
    Each read waits at the server up to `poll_s` for the end (`?wait_s=`, held under the
    client's read timeout), so the end is seen as it comes: `poll_s` only says how often
    the run is read while it goes on."""
    deadline = time.monotonic() + timeout_s
    read_timeout = client.timeout.read
    longest = MAX_WAIT_S if read_timeout is None else min(MAX_WAIT_S, read_timeout / 2)
    while True:
        asked = time.monotonic()
        wait_s = max(0.0, min(poll_s, longest, deadline - asked))
        run: dict[str, Any] = _checked(client.get(f"/api/runs/{run_id}", params={"wait_s": wait_s}))
        if run["status"] in FINAL_RUN_STATUSES:
            return run
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout_s:g} s waiting for run {run_id} to finish "
                f"(still {run['status']})"
            )
        # A server that did not wait (one older than ?wait_s=) is still read every poll_s.
        time.sleep(max(0.0, min(poll_s - (time.monotonic() - asked), deadline - time.monotonic())))


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


class Client(httpx.Client):
    """The HTTP API with typed calls; an `httpx.Client` (base_url the server's) for any
    request the typed calls do not cover, or whose error status is what is looked at.
    `token`: an API token (`driftbench token create`), sent as a Bearer header."""

    def __init__(
        self, base_url: str = "http://127.0.0.1:8000", *, token: str | None = None, **options: Any
    ) -> None:
        headers = dict(options.pop("headers", None) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        options.setdefault("timeout", 120)
        super().__init__(base_url=base_url, headers=headers, **options)

    def post_model(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        tags: str | Iterable[str] | None = None,
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
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        tags: str | Iterable[str] | None = None,
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

    def upload_inputs(
        self, model_id: int, arrays: np.ndarray | Mapping[str, np.ndarray]
    ) -> dict[str, Any]:
        """An input set from your own arrays: one array (a one-input model) or arrays
        keyed by input name, sent as .npy / .npz."""
        buffer = io.BytesIO()
        if isinstance(arrays, np.ndarray):
            np.save(buffer, arrays, allow_pickle=False)
            name = "inputs.npy"
        else:
            np.savez(buffer, **arrays)
            name = "inputs.npz"
        inputs: dict[str, Any] = _checked(
            self.post(f"/api/models/{model_id}/inputs", files={"file": (name, buffer.getvalue())})
        )
        return inputs

    def rows(self, run_id: int, **params: Any) -> list[dict[str, Any]]:
        """The run's divergence rows of one mode (backend x layer: every metric, the
        verdict, the diagnosis) as plain records, infinite and NaN metrics as floats (JSON
        carries them as strings); `params`: against, mode (default accumulated), backend."""
        rows: list[dict[str, Any]] = self.divergence(run_id, **params)["rows"]
        return [
            {
                key: float(value) if isinstance(value, str) and value in NON_FINITE else value
                for key, value in row.items()
            }
            for row in rows
        ]

    def layer_output(
        self, run_id: int, backend: str, layer: str, mode: str = "accumulated"
    ) -> np.ndarray:
        """One backend's output of one layer, as the array it stored."""
        response = self.get(
            f"/api/runs/{run_id}/output", params={"backend": backend, "layer": layer, "mode": mode}
        )
        if response.is_error:
            _checked(response)
        return np.load(io.BytesIO(response.content), allow_pickle=False)

    def delete_model(self, model_id: int) -> None:
        """The model, its runs and their stored outputs."""
        response = self.delete(f"/api/models/{model_id}")
        if response.is_error:
            _checked(response)
