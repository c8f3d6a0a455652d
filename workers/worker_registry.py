"""Which workers are alive, which queues they serve and which backends they can run.

Each Celery worker announces itself in Redis under a key that expires after three
heartbeats, so a worker that dies disappears by itself; the API reads the keys to
answer /api/backends and to refuse a run that no live worker could serve.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import redis

from app.core.config import settings
from workers.backends.registry import REGISTRY

KEY_PREFIX = "driftbench:worker:"


def redis_py_url(broker_url: str) -> str:
    """The broker URL as redis-py reads it. Celery (kombu) spells Redis on a unix socket
    `redis+socket:///path/redis.sock`, redis-py `unix:///path/redis.sock`; TCP URLs are
    the same for both."""
    scheme = "redis+socket://"
    if broker_url.startswith(scheme):
        return "unix://" + broker_url.removeprefix(scheme)
    return broker_url


def _client() -> redis.Redis:
    return redis.Redis.from_url(redis_py_url(settings.broker_url))


def worker_record(queues: list[str]) -> dict[str, Any]:
    options = settings.engine_options()
    backends = {
        backend: entry.runner_class().status(options)
        for backend, entry in REGISTRY.items()
        if entry.queue in queues
    }
    return {"host": socket.gethostname(), "queues": queues, "backends": backends}


class Heartbeat:
    """Re-announces one worker every DRIFTBENCH_WORKER_HEARTBEAT_S until stopped."""

    def __init__(self, name: str, queues: list[str]) -> None:
        self.key = KEY_PREFIX + name
        self.payload = json.dumps(worker_record(queues))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")

    def _announce(self) -> None:
        _client().set(self.key, self.payload, ex=max(1, int(3 * settings.worker_heartbeat_s)))

    def _beat(self) -> None:
        while not self._stop.wait(settings.worker_heartbeat_s):
            self._announce()

    def start(self) -> None:
        self._announce()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        _client().delete(self.key)


def live_workers() -> list[dict[str, Any]]:
    client = _client()
    keys = sorted(client.scan_iter(match=KEY_PREFIX + "*"))
    return [json.loads(value) for value in client.mget(keys) if value] if keys else []


def cluster_backends() -> dict[str, dict[str, Any]]:
    """Per backend: available on some live worker, else why not."""
    workers = live_workers()
    status: dict[str, dict[str, Any]] = {}
    for backend, entry in REGISTRY.items():
        serving = [w for w in workers if entry.queue in w["queues"]]
        reports = [w["backends"].get(backend, {}) for w in serving]
        usable = [r for r in reports if r.get("available")]
        if usable:
            status[backend] = {
                "available": True,
                "reason": None,
                "versions": usable[0].get("versions", {}),
            }
        elif serving:
            status[backend] = {
                "available": False,
                "versions": {},
                "reason": "; ".join(sorted({str(r.get("reason")) for r in reports})),
            }
        else:
            status[backend] = {
                "available": False,
                "versions": {},
                "reason": f"no live worker serves queue {entry.queue!r}",
            }
    return status
