"""API tokens with `read` and `write` scopes.

Tokens are random (256 bits), so a plain SHA-256 is a safe way to store them: only
the hash is kept, and the token is printed once, when created. When the server
binds beyond loopback (or DRIFTBENCH_AUTH=required) every /api call needs
`Authorization: Bearer <token>`; GET needs `read` or `write`, anything else
`write`. Dashboards ask for a token once and keep it in an HttpOnly cookie,
which the API also accepts, so pages read the API with it.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import settings
from app.db import session_scope
from app.errors import ApiError
from app.models import ApiToken

Scope = Literal["read", "write"]
COOKIE = "driftbench_token"
READ_METHODS = {"GET", "HEAD", "OPTIONS"}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, scope: Scope) -> str:
    token = "dbt_" + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, scope=scope, token_hash=token_hash(token)))
    session.commit()
    return token


def scope_of(token: str) -> str | None:
    with session_scope() as session:
        row = session.scalars(
            select(ApiToken).filter_by(token_hash=token_hash(token), revoked=False)
        ).first()
        return row.scope if row else None


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE)


def authorize(request: Request) -> None:
    """Router dependency: 401 without a valid token, 403 for a read token that writes."""
    if not settings.auth_required:
        return
    token = presented_token(request)
    if not token:
        raise ApiError(
            401,
            "this server requires an API token: send 'Authorization: Bearer "
            "<token>' (create one with `driftbench token create`)",
        )
    scope = scope_of(token)
    if scope is None:
        raise ApiError(401, "unknown or revoked API token")
    if request.method not in READ_METHODS and scope != "write":
        raise ApiError(
            403,
            f"a '{scope}' token cannot {request.method} {request.url.path}; "
            "it needs the 'write' scope",
        )
