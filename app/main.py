"""The FastAPI application: migrations on start, the executor, the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import api_router
from app.api.errors import install_error_handlers
from app.core.config import settings
from app.core.db import session_factory
from app.core.migrate import upgrade_database
from app.data.retention import OutputRetention
from app.executor import make_executor, resume_interrupted_runs
from app.web import dashboards, probe
from workers.inspection import ModelInspector


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    upgrade_database()
    app.state.inspector = ModelInspector(settings.engine_options())
    app.state.executor = make_executor()
    if settings.executor == "local":
        resume_interrupted_runs(app.state.executor)
    retention = OutputRetention(settings.output_retention_days)
    retention.start()
    try:
        yield
    finally:
        app.state.executor.shutdown()
        app.state.inspector.close()
        retention.stop()


class BodyLimit:
    """413 before the body is read, when Content-Length already says it is too large. A
    plain ASGI middleware: Starlette's `@app.middleware("http")` runs every request
    through memory streams and a task group of its own (a request took 1.8-2.3 ms with
    it, 1.1-1.6 without, here; two are on every run's way: its POST and the wait for
    its end)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > settings.max_upload_bytes + 64 * 1024:
                response = JSONResponse(
                    {
                        "detail": f"request body of {length.decode()} bytes is over the "
                        f"{settings.max_upload_bytes}-byte limit (DRIFTBENCH_MAX_UPLOAD_BYTES)"
                    },
                    status_code=413,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app() -> FastAPI:
    app = FastAPI(
        title="driftbench",
        summary="How far a Keras model's numbers drift on each backend, and where it starts.",
        version="0.1.0",
        lifespan=lifespan,
    )

    app.add_middleware(BodyLimit)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Unauthenticated liveness for orchestrators: the app is up and the database answers."""
        with session_factory()() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok"}

    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(dashboards.router)
    app.include_router(probe.router)
    app.mount("/static", dashboards.static_files, name="static")
    return app


app = create_app()
