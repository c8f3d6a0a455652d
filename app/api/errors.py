"""The only place a domain error becomes an HTTP response: its status hint and message."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from workers.engine.errors import DriftbenchError


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DriftbenchError)
    async def domain_error(_: Request, error: DriftbenchError) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)
