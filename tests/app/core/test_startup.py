"""Start-up against a database that is not there yet: retries, then a clear error or a
server that comes up once the database does."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.service_process import LiveServer
from driftbench.client import wait_for
from tests.support import throwaway_postgres


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        target.close()
        source.close()


@contextmanager
def refusing_port() -> Iterator[socket.socket]:
    """A local port that refuses connections: bound but not listening. Unlike a port
    closed again after finding it free, nothing else can take it while the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


@contextmanager
def tcp_forwarder(listener: socket.socket, target_port: int) -> Iterator[None]:
    """Start listening on the bound `listener` and relay every connection to
    127.0.0.1:target_port: a database that appears late."""
    listener.listen()
    listener.settimeout(0.2)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", target_port))
            for pair in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=pair, daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        thread.join()


def test_unreachable_database_is_retried_then_a_clear_error(tmp_path: Path) -> None:
    with refusing_port() as database:
        port = database.getsockname()[1]
        server = LiveServer(
            tmp_path,
            f"postgresql+psycopg://postgres:secret@127.0.0.1:{port}/driftbench",
            db_startup_timeout_s="3",
        )
        with pytest.raises(RuntimeError, match="server exited"):
            server.start(timeout_s=60)
    assert server.process is not None and server.process.returncode == 2
    log = server.log_path.read_text()
    assert log.count("unreachable (") >= 2  # retried, with the driver's reason each time
    assert f"127.0.0.1:{port}/driftbench unreachable after" in log
    assert "DRIFTBENCH_DB_STARTUP_TIMEOUT_S" in log
    assert "secret" not in log and "Traceback" not in log


def test_server_waits_for_a_database_that_comes_up_late(tmp_path: Path) -> None:
    with throwaway_postgres() as url, refusing_port() as database:
        late_url = url.replace("127.0.0.1:5432", f"127.0.0.1:{database.getsockname()[1]}")
        server = LiveServer(tmp_path, late_url, db_startup_timeout_s="60")
        try:
            server.start_in_background()
            wait_for(
                lambda: "unreachable (" in server.log_path.read_text(),
                timeout_s=60,
                what="the server to log a failed attempt to reach the database",
            )
            with tcp_forwarder(database, 5432):
                server.wait_until_healthy(timeout_s=90)
                assert httpx.get(f"{server.url}/api/models").json()["count"] == 0
                # The port read from --port-file is the one the server says it bound.
                assert f"listening on {server.url}\n" in server.log_path.read_text()
                server.stop()
        finally:
            server.stop()
