"""The FastAPI application: migrations on start, the executor, the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

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


def create_app() -> FastAPI:
    app = FastAPI(
        title="driftbench",
        summary="How far a Keras model's numbers drift on each backend, and where it starts.",
        version="0.1.0",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def refuse_oversize_bodies(request: Request, call_next):  # type: ignore[no-untyped-def]
        """413 before the body is read, when Content-Length already says it is too large."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_upload_bytes + 64 * 1024:
            return JSONResponse(
                {
                    "detail": f"request body of {length} bytes is over the "
                    f"{settings.max_upload_bytes}-byte limit (DRIFTBENCH_MAX_UPLOAD_BYTES)"
                },
                status_code=413,
            )
        return await call_next(request)

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
