"""Which backends this deployment can run: this process's own (embedded executor) or
what live Celery workers announce (celery executor)."""

from __future__ import annotations

from typing import Any

from app.core.config import settings
from workers.backends.registry import REGISTRY


def backend_statuses() -> dict[str, dict[str, Any]]:
    if settings.executor == "celery":
        from workers.worker_registry import cluster_backends

        return cluster_backends()
    options = settings.engine_options()
    return {backend: entry.runner_class().status(options) for backend, entry in REGISTRY.items()}
