"""All /api routers, wired in one place."""

from fastapi import APIRouter, Depends

from app.api import backends, drift, models, ports, runs
from app.api.auth import authorize
from app.schemas import ErrorPublic

ERRORS = {
    401: {"model": ErrorPublic, "description": "No valid API token (when tokens are required)"},
    403: {"model": ErrorPublic, "description": "A read token asked to write"},
    404: {"model": ErrorPublic, "description": "No such model, input set or run"},
    422: {"model": ErrorPublic, "description": "Invalid request; the detail names the problem"},
}

api_router = APIRouter(prefix="/api", dependencies=[Depends(authorize)], responses=ERRORS)
for module in (models, runs, ports, drift, backends):
    api_router.include_router(module.router)
