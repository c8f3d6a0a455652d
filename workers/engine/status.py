"""Every status a run or a backend run can be in: one vocabulary for the engine, the
database, the API and the dashboards."""

from __future__ import annotations

from enum import StrEnum


class BackendStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"  # a layer this backend cannot run; the reason names it
    SKIPPED = "skipped"  # this machine cannot run the backend at all (no GPU, no browser)

    @property
    def is_final(self) -> bool:
        return self not in (BackendStatus.QUEUED, BackendStatus.RUNNING)


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    # Every backend has finished and the comparison with the reference is being stored;
    # the value predates the name and stays for databases written by earlier versions.
    COMPARING = "finalizing"
    DONE = "done"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (RunStatus.DONE, RunStatus.FAILED)
