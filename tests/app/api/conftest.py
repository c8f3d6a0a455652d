"""One live server per database for the API tests (test_api.py, test_ports.py): starting
one, with its job processes, is most of what an API test costs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.service_process import LiveServer
from driftbench.client import Client
from tests.support import throwaway_postgres

UPLOAD_LIMIT = 8 * 1024 * 1024


@pytest.fixture(scope="package")
def gate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a test holds a backend's jobs mid-run (tests/support.py `hold`)."""
    return tmp_path_factory.mktemp("gate")


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, gate_dir: Path
) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp(f"api-{request.param}")
    settings = {"max_upload_bytes": str(UPLOAD_LIMIT), "test_job_gate_dir": str(gate_dir)}
    if request.param == "sqlite":
        with LiveServer(data_dir, None, **settings) as live:
            yield live
    else:
        with throwaway_postgres() as url, LiveServer(data_dir, url, **settings) as live:
            yield live


@pytest.fixture(scope="package")
def client(server: LiveServer) -> Iterator[Client]:
    with server.client() as http:
        yield http
