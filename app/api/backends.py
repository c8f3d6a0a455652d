"""/api/backends: what this server can run, and why not."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.schemas import BackendsPublic
from workers.runners import RUNNERS

router = APIRouter(prefix="/backends", tags=["backends"])


@router.get("", response_model=BackendsPublic)
def list_backends() -> dict[str, Any]:
    data = [
        {
            "id": backend,
            "queue": runner.QUEUE,
            "available": runner.availability() is None,
            "reason": runner.availability(),
            "versions": runner.versions(),
        }
        for backend, runner in RUNNERS.items()
    ]
    return {"count": len(data), "data": data}
