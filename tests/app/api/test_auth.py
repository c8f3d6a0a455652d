"""Access control: hashed tokens with read/write scopes, required beyond loopback."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.service_process import LiveServer
from driftbench.client import Client, ServiceError


def create_token(data_dir: Path, scope: str) -> str:
    env = {**os.environ, "DRIFTBENCH_DATA_DIR": str(data_dir)}
    completed = subprocess.run(
        [
            str(Path(sys.executable).with_name("driftbench")),
            "token",
            "create",
            "--name",
            f"{scope}-test",
            "--scope",
            scope,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return completed.stdout.strip()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("auth")
    tokens = {scope: create_token(data_dir, scope) for scope in ("read", "write")}
    server = LiveServer(data_dir, None, auth="required")
    server.start()
    yield {"server": server, "tokens": tokens, "data_dir": data_dir}
    server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_auth_is_required_beyond_loopback_by_default() -> None:
    assert Settings(host="0.0.0.0").auth_required
    assert not Settings(host="127.0.0.1").auth_required
    assert Settings(host="127.0.0.1", auth="required").auth_required
    assert not Settings(host="0.0.0.0", auth="off").auth_required


def test_api_needs_a_token_and_the_right_scope(secured: dict, example: Any) -> None:
    url = secured["server"].url
    read, write = secured["tokens"]["read"], secured["tokens"]["write"]
    missing = httpx.get(f"{url}/api/models")
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["detail"]
    assert httpx.get(f"{url}/api/models", headers=bearer("dbt_forged")).status_code == 401
    assert httpx.get(f"{url}/api/models", headers=bearer(read)).status_code == 200
    path = example("regression").path
    files = {"file": (path.name, path.read_bytes())}
    refused = httpx.post(f"{url}/api/models", files=files, headers=bearer(read))
    assert refused.status_code == 403 and "needs the 'write' scope" in refused.json()["detail"]
    created = httpx.post(f"{url}/api/models", files=files, headers=bearer(write), timeout=120)
    assert created.status_code == 201, created.text
    model_id = created.json()["id"]
    assert httpx.delete(f"{url}/api/models/{model_id}", headers=bearer(read)).status_code == 403
    assert httpx.get(f"{url}/api/models/{model_id}", headers=bearer(read)).status_code == 200


def test_the_python_client_sends_its_token(secured: dict, example: Any) -> None:
    url = secured["server"].url
    with Client(url, token=secured["tokens"]["read"]) as reader:
        assert reader.get("/api/models").status_code == 200
        with pytest.raises(ServiceError) as refused:
            reader.upload_model(example("regression").path)
        assert refused.value.status_code == 403
    with Client(url) as anonymous, pytest.raises(ServiceError) as missing:
        anonymous.backends()
    assert missing.value.status_code == 401


def test_tokens_are_stored_only_as_hashes(secured: dict) -> None:
    with sqlite3.connect(secured["data_dir"] / "driftbench.db") as db:
        rows = db.execute("SELECT name, scope, token_hash FROM api_tokens").fetchall()
    stored = " ".join(str(value) for row in rows for value in row)
    for token in secured["tokens"].values():
        assert token not in stored
        assert hashlib.sha256(token.encode()).hexdigest() in stored


def test_dashboards_ask_once_and_keep_the_token_in_an_httponly_cookie(secured: dict) -> None:
    url = secured["server"].url
    first = httpx.get(f"{url}/", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"].startswith("/login")
    wrong = httpx.post(f"{url}/login", data={"token": "dbt_nope", "next": "/"})
    assert wrong.status_code == 401
    login = httpx.post(
        f"{url}/login",
        data={"token": secured["tokens"]["read"], "next": "/"},
        follow_redirects=False,
    )
    assert login.status_code == 303
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "driftbench_token=" in cookie
    with httpx.Client(base_url=url, cookies=login.cookies) as browser:
        assert browser.get("/").status_code == 200
        assert browser.get("/api/models").status_code == 200
