"""Server-rendered dashboard pages (Jinja2) whose charts (Plotly.js) read the JSON API.

Plotly.js comes from npm (app/web/package-lock.json) and is served by the app, so
the pages work on a machine with no internet. Templates are autoescaped; the
script inserts every user-supplied string as text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.api.auth import COOKIE, presented_token
from app.api.deps import MAX_ROW_ID, RowId, SessionDep
from app.core.config import settings
from app.core.errors import Unauthorized
from app.data.runs import get_run
from app.data.tokens import scope_of
from app.data.uploads import get_model
from workers.engine.metrics import AGGREGATE_METRICS, VERDICTS

WEB_DIR = Path(__file__).resolve().parent
PLOTLY = WEB_DIR / "node_modules" / "plotly.js-dist-min" / "plotly.min.js"
templates = Jinja2Templates(directory=WEB_DIR / "templates")
router = APIRouter(include_in_schema=False)
# The metric and verdict lists the pages' menus and colours use, from the engine's own.
VOCABULARY = json.dumps({"metrics": AGGREGATE_METRICS, "verdicts": VERDICTS})
static_files = StaticFiles(directory=WEB_DIR / "static")
RunQuery = Annotated[int, Query(ge=0, le=MAX_ROW_ID)]


def page(request: Request, template: str, name: str, **params: Any) -> Response:
    """A dashboard page, or the token form when this server requires a token."""
    token = presented_token(request)
    if settings.auth_required and (token is None or scope_of(token) is None):
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    return templates.TemplateResponse(
        request, template, {"page": name, "params": params, "vocabulary": VOCABULARY}
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    return templates.TemplateResponse(
        request, "login.html", {"page": "login", "params": {}, "next": next}
    )


@router.post("/login")
def login(token: Annotated[str, Form()], next: Annotated[str, Form()] = "/") -> Response:
    """Keep a valid token in an HttpOnly cookie; the pages and their API calls use it."""
    if scope_of(token) is None:
        raise Unauthorized("unknown or revoked API token")
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", secure=False, max_age=30 * 24 * 3600
    )
    return response


@router.get("/static/plotly.min.js")
def plotly() -> FileResponse:
    return FileResponse(PLOTLY, media_type="text/javascript")


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> Response:
    return page(request, "index.html", "index")


@router.get("/new", response_class=HTMLResponse)
def new_run_page(request: Request) -> Response:
    return page(request, "new.html", "new")


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, session: SessionDep, before: RunQuery, after: RunQuery | None = None
) -> Response:
    get_run(session, before)
    return page(request, "compare.html", "compare", before=before, after=after or "")


@router.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(request: Request, session: SessionDep, model_id: RowId) -> Response:
    get_model(session, model_id)  # unknown ids answer 404 like the API
    return page(request, "model.html", "model", model=model_id)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, session: SessionDep, run_id: RowId) -> Response:
    get_run(session, run_id)
    return page(request, "run.html", "run", run=run_id)


@router.get("/runs/{run_id}/browser", response_class=HTMLResponse)
def browser_page(request: Request, session: SessionDep, run_id: RowId) -> Response:
    get_run(session, run_id)
    return page(request, "browser.html", "browser", run=run_id)


@router.get("/drift/depth", response_class=HTMLResponse)
def depth_page(request: Request) -> Response:
    return page(request, "depth.html", "depth")
