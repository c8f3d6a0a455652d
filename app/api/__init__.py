"""All /api routers, wired in one place."""

from fastapi import APIRouter

from app.api import backends, drift, models, runs

api_router = APIRouter(prefix="/api")
for module in (models, runs, drift, backends):
    api_router.include_router(module.router)
