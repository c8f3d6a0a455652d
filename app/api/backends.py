"""/api/backends: what this deployment can run, and why not."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.backend_status import backend_statuses
from app.schemas import BackendsPublic
from workers.backends.registry import REGISTRY

router = APIRouter(prefix="/backends", tags=["backends"])


@router.get("", response_model=BackendsPublic)
def list_backends() -> dict[str, Any]:
    """Embedded executor: this server's own backends; Celery: what live workers announce."""
    statuses = backend_statuses()
    data = [
        {
            "id": backend,
            "queue": entry.queue,
            "precision": entry.precision,
            "by_default": entry.by_default,
            **statuses[backend],
        }
        for backend, entry in REGISTRY.items()
    ]
    return {"count": len(data), "data": data}
