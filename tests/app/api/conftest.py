"""One live server per database for the API tests (test_api.py, test_ports.py): starting
one, with its job processes, is most of what an API test costs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.service_process import LiveServer
from driftbench.client import Client
from tests.support import throwaway_postgres

UPLOAD_LIMIT = 8 * 1024 * 1024


@pytest.fixture(scope="package", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp(f"api-{request.param}")
    if request.param == "sqlite":
        with LiveServer(data_dir, None, max_upload_bytes=str(UPLOAD_LIMIT)) as live:
            yield live
    else:
        with (
            throwaway_postgres() as url,
            LiveServer(data_dir, url, max_upload_bytes=str(UPLOAD_LIMIT)) as live,
        ):
            yield live


@pytest.fixture(scope="package")
def client(server: LiveServer) -> Iterator[Client]:
    with server.client() as http:
        yield http
