"""Expiring stored layer outputs by age (DRIFTBENCH_OUTPUT_RETENTION_DAYS, off by default).

Layer outputs are what makes the data directory grow without bound: every layer of
every backend of every run, megabytes each, while the metrics computed from them are
a few rows that the run pages and drift aggregates keep reading. So past the
retention age a run's outputs files are deleted and its rows kept; the backend run
records when, and what needs the arrays (a tensor download, a comparison against a
backend not compared before) answers 410 instead. The API server sweeps at start
and hourly (with Celery too: it shares the data directory); `driftbench outputs
expire` sweeps once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from app.core.db import session_scope
from app.data import storage
from app.data.orm import BackendRun, Run, utcnow
from workers.engine.status import RunStatus

SWEEP_INTERVAL_S = 3600.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpiredOutputs:
    """What one sweep deleted."""

    runs: int
    backend_runs: int
    bytes: int


def expire_outputs(retention_days: int, stop: threading.Event | None = None) -> ExpiredOutputs:
    """Delete the outputs of every run that finished more than `retention_days` ago.

    Each run is one transaction, committed before its files go: a crash in between
    leaves files no row points to, never a row pointing at a deleted file, and of two
    servers sweeping at once only one finds a run's rows still to expire. `stop` is
    checked between runs, so a server shutting down does not wait for a long backlog.
    """
    now = utcnow()
    with session_scope() as session:
        run_ids = session.scalars(
            select(Run.id)
            .join(Run.backend_runs)
            .where(
                Run.status.in_((RunStatus.DONE, RunStatus.FAILED)),
                Run.finished_at < now - timedelta(days=retention_days),
                BackendRun.outputs_path.is_not(None),
            )
            .distinct()
            .order_by(Run.id)
        ).all()
    runs = backend_runs = deleted_bytes = 0
    for run_id in run_ids:
        if stop is not None and stop.is_set():
            break
        with session_scope() as session:
            expired = session.execute(
                update(BackendRun)
                .where(BackendRun.run_id == run_id, BackendRun.outputs_path.is_not(None))
                .values(outputs_path=None, outputs_expired_at=now)
            ).rowcount
        if expired:
            runs += 1
            backend_runs += expired
            deleted_bytes += storage.remove_run_outputs(run_id)
    return ExpiredOutputs(runs=runs, backend_runs=backend_runs, bytes=deleted_bytes)


class OutputRetention:
    """The API server's sweeper: at start, then every SWEEP_INTERVAL_S, on a daemon
    thread; nothing at all when `retention_days` is None (outputs kept forever)."""

    def __init__(self, retention_days: int | None) -> None:
        self.retention_days = retention_days
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sweep, daemon=True, name="output-retention")

    def _sweep(self) -> None:
        assert self.retention_days is not None
        while not self._stop.is_set():
            try:
                expired = expire_outputs(self.retention_days, self._stop)
            except Exception:  # a database hiccup must not end the sweeping for good
                log.exception("expiring outputs failed; next try in %.0f s", SWEEP_INTERVAL_S)
            else:
                if expired.runs:
                    log.info(
                        "expired the layer outputs of %d runs (%d bytes) older than %d days",
                        expired.runs,
                        expired.bytes,
                        self.retention_days,
                    )
            self._stop.wait(SWEEP_INTERVAL_S)

    def start(self) -> None:
        if self.retention_days is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
