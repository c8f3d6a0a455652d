"""Domain errors to HTTP answers: each carries a status and a message naming the problem."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.config import settings
from app.models import BackendRun
from workers.inputs import InputError
from workers.model_inspection import InspectionFailed
from workers.runners import UnknownBackend


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class StorageFull(ApiError):
    """The data directory's filesystem is full (ENOSPC) or over its quota (EDQUOT).

    One error for every write into the data directory, naming the file and the space
    left, so an upload answers 507 and a job records it as the backend's reason
    instead of a bare OSError from deep inside numpy or shutil.
    """

    ERRNOS = (errno.ENOSPC, errno.EDQUOT)

    def __init__(self, code: int, path: Path, data_dir: Path, free_bytes: int) -> None:
        super().__init__(
            507,
            f"{os.strerror(code).lower()} writing {path} "
            f"(DRIFTBENCH_DATA_DIR={data_dir}): {free_bytes} bytes free",
        )


class OutputsExpired(ApiError):
    """A request that needs the stored arrays of a backend run whose outputs the
    retention sweep deleted (app/retention.py); its metrics are still there."""

    def __init__(self, backend_run: BackendRun) -> None:
        days = settings.output_retention_days
        retention = "DRIFTBENCH_OUTPUT_RETENTION_DAYS" + (f"={days} days" if days else "")
        super().__init__(
            410,
            f"outputs expired: the layer outputs of run {backend_run.run_id} backend "
            f"{backend_run.backend} were deleted on {backend_run.outputs_expired_at:%Y-%m-%d} "
            f"after {retention}; its metrics and divergence rows remain",
        )


def not_found(kind: str, identifier: object) -> ApiError:
    return ApiError(404, f"{kind} {identifier} not found")


UNPROCESSABLE = (InputError, InspectionFailed, UnknownBackend)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status_code)

    for error_class in UNPROCESSABLE:

        @app.exception_handler(error_class)
        async def unprocessable(_: Request, error: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(error)}, status_code=422)
