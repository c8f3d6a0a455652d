"""No container engine runs here, so the compose file is checked against the code itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli.main import build_parser
from app.core.config import Settings
from workers.backends.registry import REGISTRY
from workers.celery_app import QUEUES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def driftbench_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("command", [""])[0] == "driftbench"}


def test_every_command_is_a_real_driftbench_command(services: dict[str, Any]) -> None:
    ours = driftbench_services(services)
    assert set(ours) == {"api", "worker-cpu", "worker-browser", "worker-gpu"}
    for name, service in ours.items():
        args = build_parser().parse_args(service["command"][1:])
        assert callable(args.handler), name


def test_every_variable_is_a_real_setting(services: dict[str, Any]) -> None:
    fields = {f"DRIFTBENCH_{name.upper()}" for name in Settings.model_fields}
    for name, service in driftbench_services(services).items():
        unknown = {key for key in service["environment"] if key.startswith("DRIFTBENCH_")} - fields
        assert not unknown, (name, unknown)
    dockerfiles = (ROOT / "Dockerfile").read_text() + (ROOT / "Dockerfile.gpu").read_text()
    for line in dockerfiles.splitlines():
        for word in line.replace("\\", " ").split():
            if word.startswith("DRIFTBENCH_"):
                assert word.split("=")[0] in fields, word


def test_every_backend_queue_is_served_and_every_served_queue_exists(
    services: dict[str, Any],
) -> None:
    served = set()
    for service in driftbench_services(services).values():
        args = build_parser().parse_args(service["command"][1:])
        if service["command"][1] == "worker":
            served.update(args.queues)
    assert served <= set(QUEUES)
    assert {entry.queue for entry in REGISTRY.values()} <= served
    assert "gpu" in served


def test_services_share_the_data_volume_and_wait_for_their_dependencies(
    services: dict[str, Any],
) -> None:
    for name, service in driftbench_services(services).items():
        assert "data:/data" in service["volumes"], name
        assert service["environment"]["DRIFTBENCH_DATA_DIR"] == "/data"
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert all("healthcheck" in services[name] for name in ("postgres", "redis", "api"))
    # The api binds 0.0.0.0, so /api needs a token; its healthcheck must use /healthz.
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    gpu_dockerfile = (ROOT / gpu["build"]["dockerfile"]).read_text()
    assert "tensorflow[and-cuda]" in gpu_dockerfile
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
