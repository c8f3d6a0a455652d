"""The Celery app: broker, reliability settings and routing, all in one module.

Jobs are acknowledged late (after they finish) and workers take one at a time, so
a job whose worker is killed is delivered again; that is only safe because every
job is idempotent. With Redis the re-delivery comes after the visibility timeout.
Each backend job goes to the queue of its backend's capability (cpu, browser, gpu).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from app.core.config import settings
from workers.backends.registry import CAPABILITIES, backend_entry

START_TASK = "driftbench.start_run"
BACKEND_TASK = "driftbench.backend_run"
FINALIZE_TASK = "driftbench.finalize_run"
TASK_QUEUES = {START_TASK: "cpu", FINALIZE_TASK: "cpu"}
QUEUES = CAPABILITIES


def route_task(
    name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **_: Any
) -> dict[str, str]:
    """Backend jobs go to their backend's queue; the rest by name."""
    if name == BACKEND_TASK:
        backend = kwargs.get("backend") if kwargs else args[1]
        return {"queue": backend_entry(backend).queue}
    return {"queue": TASK_QUEUES.get(name, "cpu")}


celery = Celery("driftbench", broker=settings.broker_url, include=["workers.tasks"])
celery.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_routes=(route_task,),
    task_default_queue="cpu",
    task_ignore_result=True,
    # Kombu sweeps for jobs of dead workers every interval x throttle seconds (100 s by
    # default, on top of the visibility timeout): one scan per interval, at most 10 s.
    broker_transport_options={
        "visibility_timeout": settings.broker_visibility_timeout_s,
        "unacked_restore_interval": min(settings.broker_visibility_timeout_s, 10),
        "unacked_restore_throttle": 1,
    },
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
