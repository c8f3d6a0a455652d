"""The README is for users: every setting and every API route must be in it."""

import re
from pathlib import Path

from app.core.config import Settings
from app.main import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"DRIFTBENCH_{name.upper()}"
        for name in Settings.model_fields
        if f"DRIFTBENCH_{name.upper()}" not in README
    ]
    assert not missing


def test_every_api_route_has_a_curl_example() -> None:
    routes = [path for path in app.openapi()["paths"] if path.startswith("/api")]
    assert len(routes) >= 10
    missing = []
    for path in routes:
        # "/api/runs/{run_id}/divergence" must appear as e.g. "$API/runs/1/divergence".
        pattern = re.escape("$API" + path.removeprefix("/api"))
        pattern = re.sub(r"\\\{[^}]+\\\}", r"[^/\\s?\"]+", pattern) + r"(?![\w/])"
        if not re.search(pattern, README):
            missing.append(path)
    assert not missing
    assert README.startswith("# driftbench\n\n```sh\nmake demo")
