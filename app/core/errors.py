"""The service's errors: one class per answer, all under the engine's `DriftbenchError`.

Each carries its status as a hint and a message naming the problem; the data
layer raises them without knowing about HTTP. app/api/errors.py turns any
`DriftbenchError` into a response and the CLI (app/cli/main.py) into an exit status.
"""

from __future__ import annotations

import errno
import os
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from workers.engine.errors import DriftbenchError, InvalidRequest


class NotFound(DriftbenchError):
    status: ClassVar[int] = 404

    def __init__(self, kind: str, identifier: object) -> None:
        super().__init__(f"{kind} {identifier} not found")


class Unauthorized(DriftbenchError):
    status: ClassVar[int] = 401


class Forbidden(DriftbenchError):
    status: ClassVar[int] = 403


class Conflict(DriftbenchError):
    """The request is valid but the state of what it names does not allow it yet."""

    status: ClassVar[int] = 409


class TooLarge(DriftbenchError):
    status: ClassVar[int] = 413


class UnsupportedFile(DriftbenchError):
    status: ClassVar[int] = 415


class StorageFull(DriftbenchError):
    """The data directory's filesystem is full (ENOSPC) or over its quota (EDQUOT).

    One error for every write into the data directory, naming the file and the space
    left, so an upload answers 507 and a job records it as the backend's reason
    instead of a bare OSError from deep inside numpy or shutil.
    """

    status: ClassVar[int] = 507
    ERRNOS = (errno.ENOSPC, errno.EDQUOT)

    def __init__(self, code: int, path: Path, data_dir: Path, free_bytes: int) -> None:
        super().__init__(
            f"{os.strerror(code).lower()} writing {path} "
            f"(DRIFTBENCH_DATA_DIR={data_dir}): {free_bytes} bytes free"
        )


class ComparisonFailed(DriftbenchError):
    """The job process comparing a run crashed, ran out of memory or out of time."""

    status: ClassVar[int] = 500


class OutputsExpired(DriftbenchError):
    """A request that needs the stored arrays of a backend run whose outputs the
    retention sweep deleted (app/data/retention.py); its metrics are still there."""

    status: ClassVar[int] = 410

    def __init__(
        self, run_id: int, backend: str, expired_at: datetime, retention_days: int | None
    ) -> None:
        retention = "DRIFTBENCH_OUTPUT_RETENTION_DAYS" + (
            f"={retention_days} days" if retention_days else ""
        )
        super().__init__(
            f"outputs expired: the layer outputs of run {run_id} backend {backend} were "
            f"deleted on {expired_at:%Y-%m-%d} after {retention}; its metrics and "
            "divergence rows remain"
        )


__all__ = [
    "ComparisonFailed",
    "Conflict",
    "DriftbenchError",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "OutputsExpired",
    "StorageFull",
    "TooLarge",
    "Unauthorized",
    "UnsupportedFile",
]
