"""API tokens with `read` and `write` scopes.

Tokens are random (256 bits), so a plain SHA-256 is a safe way to store them: only
the hash is kept, and the token is printed once, when created. When the server
binds beyond loopback (or DRIFTBENCH_AUTH=required) every /api call needs
`Authorization: Bearer <token>`; GET needs `read` or `write`, anything else
`write`. Dashboards ask for a token once and keep it in an HttpOnly cookie,
which the API also accepts, so pages read the API with it.
"""

from __future__ import annotations

from fastapi import Request

from app.core.config import settings
from app.core.errors import Forbidden, Unauthorized
from app.data.tokens import scope_of

COOKIE = "driftbench_token"
READ_METHODS = {"GET", "HEAD", "OPTIONS"}


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
        raise Unauthorized(
            "this server requires an API token: send 'Authorization: Bearer "
            "<token>' (create one with `driftbench token create`)",
        )
    scope = scope_of(token)
    if scope is None:
        raise Unauthorized("unknown or revoked API token")
    if request.method not in READ_METHODS and scope != "write":
        raise Forbidden(
            f"a '{scope}' token cannot {request.method} {request.url.path}; "
            "it needs the 'write' scope",
        )
