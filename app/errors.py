"""Domain errors to HTTP answers: each carries a status and a message naming the problem."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from workers.inputs import InputError
from workers.model_inspection import InspectionFailed
from workers.runners import UnknownBackend


class ApiError(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


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
