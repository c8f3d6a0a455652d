"""Probe links: a random token that lets whoever opens `/probe/<token>` (a phone, a
laptop with a real GPU) post that one run's external outputs until it expires.

Only the token's SHA-256 is stored. A token is write-only for its own run: it reads
nothing else and posts nowhere else.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.errors import Forbidden
from app.data.orm import ProbeToken, Run, utcnow
from app.data.tokens import token_hash


def create_probe(session: Session, run: Run, ttl_s: float) -> tuple[str, datetime]:
    """A new token for `run` and when it expires."""
    token = "dbp_" + secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(seconds=ttl_s)
    session.add(ProbeToken(run_id=run.id, token_hash=token_hash(token), expires_at=expires_at))
    session.commit()
    return token, expires_at


def probe_run(token: str, run_id: int | None = None) -> int:
    """The run the token was made for; 403 for a token that is unknown, expired, or made
    for another run than `run_id`."""
    with session_scope() as session:
        row = session.scalars(
            select(ProbeToken).filter_by(token_hash=token_hash(token))
        ).one_or_none()
        if row is None:
            raise Forbidden("unknown probe token")
        expires_at = row.expires_at
        if expires_at.tzinfo is None:  # SQLite hands back naive UTC
            expires_at = expires_at.replace(tzinfo=utcnow().tzinfo)
        if expires_at <= utcnow():
            raise Forbidden(f"probe token expired at {expires_at.isoformat()}")
        if run_id is not None and row.run_id != run_id:
            raise Forbidden(f"this probe token is for another run than run {run_id}")
        return row.run_id
