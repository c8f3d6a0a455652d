"""The local HTTP server the TF.js runners own: harness page, TF.js bundles, models, tensors.

Chromium loads everything from 127.0.0.1 (no CDN, no file:// URLs). Tensors move
as raw float32 bytes, one request each way: a job's inputs are one GET (unless small
enough to travel inline in the job's spec), its outputs one POST, which the page does
not wait on: the job waits here for the body instead (`JobChannel.received`). Every
response is cross-origin isolated so the wasm backend may use threads.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from workers.backends.base import split_values

HARNESS_DIR = Path(__file__).resolve().parents[3] / "js_harness"
NODE_MODULES = HARNESS_DIR / "node_modules" / "@tensorflow"
STATIC_FILES = {
    "/harness.html": HARNESS_DIR / "harness.html",
    "/harness.js": HARNESS_DIR / "harness.js",
    "/bare.html": HARNESS_DIR / "bare.html",
    "/tfjs/tf.min.js": NODE_MODULES / "tfjs" / "dist" / "tf.min.js",
    "/tfjs/tf-backend-wasm.min.js": NODE_MODULES
    / "tfjs-backend-wasm"
    / "dist"
    / "tf-backend-wasm.min.js",
}
WASM_DIR = NODE_MODULES / "tfjs-backend-wasm" / "dist"
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".bin": "application/octet-stream",
}
MAX_OUTPUT_BYTES = 1 << 31


class OutputsNotReceived(RuntimeError):
    """The page's POST of a job's outputs was refused, cut short, or never came."""


@dataclass
class JobChannel:
    """One job's tensors, each way in one request: its inputs (served unless the page was
    given them inline) and every output, concatenated in order, or why they were refused."""

    inputs: bytes
    outputs: bytes | None = None
    refused: str | None = None
    answered: threading.Event = field(default_factory=threading.Event)

    def received(self, timeout_s: float) -> bytes:
        """The outputs once their POST has been read; OutputsNotReceived with the answer
        the page was given otherwise."""
        if not self.answered.wait(timeout_s):
            raise OutputsNotReceived(f"no outputs arrived within {timeout_s:g} s")
        if self.refused is not None:
            raise OutputsNotReceived(self.refused)
        return self.outputs or b""

    def output_arrays(self, shapes: list[list[int]], timeout_s: float) -> list[np.ndarray]:
        """The received outputs as float32 arrays of these shapes."""
        return split_values(np.frombuffer(self.received(timeout_s), dtype="<f4"), shapes)


class HarnessServer:
    def __init__(self) -> None:
        self.models: dict[str, Path] = {}
        self.jobs: dict[str, JobChannel] = {}
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"harness": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, daemon=True, name="tfjs-harness-http"
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add_model(self, key: str, directory: Path) -> str:
        self.models[key] = directory
        return f"{self.url}/models/{key}/model.json"

    def open_job(self, inputs: bytes) -> tuple[str, JobChannel]:
        job_id = secrets.token_hex(8)
        channel = JobChannel(inputs=inputs)
        with self._lock:
            self.jobs[job_id] = channel
        return job_id, channel

    def close_job(self, job_id: str) -> None:
        with self._lock:
            self.jobs.pop(job_id, None)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    harness: HarnessServer
    # Keep-alive: a job's requests reuse the page's connections instead of one each.
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without TCP_NODELAY a kept-alive connection waits
    # for the delayed ACK (about 40 ms) between them.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        """Requests are not logged: a job makes hundreds of them."""

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status: HTTPStatus, reason: bytes) -> None:
        """Answer a POST without reading its body: the connection closes after the answer,
        or the next request on it would be read from the body's bytes."""
        self.close_connection = True
        self._send(status, reason, "text/plain")

    def _file(self, path: Path) -> None:
        if not path.is_file():
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
            return
        content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        self._send(HTTPStatus.OK, path.read_bytes(), content_type)

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if self.path in STATIC_FILES:
            self._file(STATIC_FILES[self.path])
        elif parts[:2] == ["tfjs", "wasm"] and len(parts) == 3 and parts[2].endswith(".wasm"):
            self._file(WASM_DIR / Path(parts[2]).name)
        elif parts[0] == "models" and len(parts) == 3 and parts[1] in self.harness.models:
            self._file(self.harness.models[parts[1]] / Path(parts[2]).name)
        elif parts[0] == "jobs" and len(parts) == 3 and parts[2] == "inputs":
            job = self.harness.jobs.get(parts[1])
            if job is None:
                self._send(HTTPStatus.NOT_FOUND, b"no such job", "text/plain")
            else:
                self._send(HTTPStatus.OK, job.inputs, "application/octet-stream")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def do_POST(self) -> None:
        parts = self.path.strip("/").split("/")
        is_outputs = len(parts) == 3 and parts[2] == "outputs"
        job = self.harness.jobs.get(parts[1]) if is_outputs else None
        if job is None:
            self._refuse(HTTPStatus.NOT_FOUND, b"no such job")
            return
        try:
            refusal = self._receive(job)
        finally:  # the job hears of it, whatever happens to the page's connection
            job.answered.set()
        with contextlib.suppress(OSError):  # the page does not wait for the answer
            if refusal is None:
                self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
            else:
                self._refuse(*refusal)

    def _receive(self, job: JobChannel) -> tuple[HTTPStatus, bytes] | None:
        """Read the outputs into the job's channel, or record there why they were not
        taken and return the answer that refuses them."""
        declared = self.headers.get("Content-Length", "")
        if not declared.isdigit():
            job.refused = f"HTTP 411: the outputs came without a byte length ({declared!r})"
            return HTTPStatus.LENGTH_REQUIRED, b"length required"
        length = int(declared)
        if length > MAX_OUTPUT_BYTES:
            job.refused = f"HTTP 413: {length} bytes of outputs, over {MAX_OUTPUT_BYTES}"
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"output too large"
        try:
            body = self.rfile.read(length)
        except OSError as error:
            job.refused = f"the outputs' connection failed: {error}"
            return HTTPStatus.BAD_REQUEST, b"outputs cut short"
        if len(body) < length:
            job.refused = f"the outputs' body ended after {len(body)} of {length} bytes"
            return HTTPStatus.BAD_REQUEST, b"outputs cut short"
        job.outputs = body
        return None
