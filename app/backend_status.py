"""Which backends this deployment can run: this process's own (embedded executor) or
what live Celery workers announce (celery executor)."""

from __future__ import annotations

from typing import Any

from app.config import settings
from workers.runners import RUNNERS


def backend_statuses() -> dict[str, dict[str, Any]]:
    if settings.executor == "celery":
        from workers.worker_registry import cluster_backends

        return cluster_backends()
    return {backend: runner.status() for backend, runner in RUNNERS.items()}
