"""All /api routers, wired in one place."""

from fastapi import APIRouter, Depends

from app.api import backends, drift, models, runs
from app.auth import authorize

api_router = APIRouter(prefix="/api", dependencies=[Depends(authorize)])
for module in (models, runs, drift, backends):
    api_router.include_router(module.router)
