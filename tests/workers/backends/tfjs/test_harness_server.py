"""The harness server's job channel over real HTTP: the page posts a job's outputs without
waiting for the answer, so the job learns here whether they arrived whole."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from workers.backends.tfjs import harness_server
from workers.backends.tfjs.harness_server import HarnessServer, OutputsNotReceived


@pytest.fixture
def server() -> Iterator[HarnessServer]:
    served = HarnessServer()
    yield served
    served.stop()


def post(server: HarnessServer, path: str, body: bytes) -> tuple[int, str | None]:
    """The answer's status and its Connection header."""
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        connection.request("POST", path, body)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Connection")
    finally:
        connection.close()


def send_raw(server: HarnessServer, request: bytes) -> None:
    """Bytes as a page's connection would carry them, then the connection half-closed."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as raw:
        raw.sendall(request)
        raw.shutdown(socket.SHUT_WR)
        raw.recv(1024)


def test_posted_outputs_are_received_as_sent(server: HarnessServer) -> None:
    job_id, channel = server.open_job(b"")
    values = bytes(range(256)) * 16
    assert post(server, f"/jobs/{job_id}/outputs", values) == (204, None)
    assert channel.received(timeout_s=10) == values
    arrays = channel.output_arrays([[2, 512]], timeout_s=10)
    assert arrays[0].shape == (2, 512) and arrays[0].tobytes() == values


def test_outputs_over_the_limit_are_refused_and_the_job_told_why(
    server: HarnessServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness_server, "MAX_OUTPUT_BYTES", 4)
    job_id, channel = server.open_job(b"")
    assert post(server, f"/jobs/{job_id}/outputs", b"12345") == (413, "close")
    with pytest.raises(OutputsNotReceived, match="HTTP 413: 5 bytes of outputs, over 4"):
        channel.received(timeout_s=10)


@pytest.mark.parametrize(
    ("framing", "body", "reason"),
    [
        ("Content-Length: 100", b"0123456789", "ended after 10 of 100 bytes"),
        (
            "Transfer-Encoding: chunked",
            b"4\r\nabcd\r\n0\r\n\r\n",
            "HTTP 411: the outputs came without a byte length",
        ),
    ],
    ids=["cut-short", "no-length"],
)
def test_a_body_that_is_not_whole_is_refused_with_the_reason(
    server: HarnessServer, framing: str, body: bytes, reason: str
) -> None:
    job_id, channel = server.open_job(b"")
    head = f"POST /jobs/{job_id}/outputs HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n"
    send_raw(server, head.encode() + body)
    with pytest.raises(OutputsNotReceived, match=reason):
        channel.received(timeout_s=10)


def test_outputs_that_never_come_end_the_wait_naming_the_time(server: HarnessServer) -> None:
    job_id, channel = server.open_job(b"")
    with pytest.raises(OutputsNotReceived, match=r"no outputs arrived within 0\.05 s"):
        channel.received(timeout_s=0.05)
    server.close_job(job_id)
    assert post(server, f"/jobs/{job_id}/outputs", b"late")[0] == 404
