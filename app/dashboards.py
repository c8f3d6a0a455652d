"""Server-rendered dashboard pages (Jinja2) whose charts (Plotly.js) read the JSON API.

Plotly.js comes from npm (app/web/package-lock.json) and is served by the app, so
the pages work on a machine with no internet. Templates are autoescaped; the
script inserts every user-supplied string as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.api.deps import SessionDep
from app.errors import not_found
from app.models import Model, Run

WEB_DIR = Path(__file__).resolve().parent / "web"
PLOTLY = WEB_DIR / "node_modules" / "plotly.js-dist-min" / "plotly.min.js"
templates = Jinja2Templates(directory=WEB_DIR / "templates")
router = APIRouter(include_in_schema=False)
static_files = StaticFiles(directory=WEB_DIR / "static")


def page(request: Request, template: str, name: str, **params: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"page": name, "params": params})


def require(session: SessionDep, table: type[Model] | type[Run], identifier: int) -> None:
    """Pages of unknown ids answer 404 like the API, before any script runs."""
    if session.get(table, identifier) is None:
        raise not_found(table.__name__.lower(), identifier)


@router.get("/static/plotly.min.js")
def plotly() -> FileResponse:
    return FileResponse(PLOTLY, media_type="text/javascript")


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    return page(request, "index.html", "index")


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(request: Request, session: SessionDep, model_id: int) -> HTMLResponse:
    require(session, Model, model_id)
    return page(request, "model.html", "model", model=model_id)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, session: SessionDep, run_id: int) -> HTMLResponse:
    require(session, Run, run_id)
    return page(request, "run.html", "run", run=run_id)


@router.get("/runs/{run_id}/browser", response_class=HTMLResponse)
def browser_page(request: Request, session: SessionDep, run_id: int) -> HTMLResponse:
    require(session, Run, run_id)
    return page(request, "browser.html", "browser", run=run_id)


@router.get("/drift/depth", response_class=HTMLResponse)
def depth_page(request: Request) -> HTMLResponse:
    return page(request, "depth.html", "depth")
