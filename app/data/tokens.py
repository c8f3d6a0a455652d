"""API tokens in the database: only each token's SHA-256 is stored.

Tokens are random (256 bits), so a plain SHA-256 is a safe way to store them; the
token itself is shown once, when created.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.data.orm import ApiToken

Scope = Literal["read", "write"]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, *, name: str, scope: Scope) -> str:
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
