"""How the embedded SQLite database is opened: every connection, not only the first."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from app.core.db import make_engine
from app.core.sqlite_writers import TurnTakingConnection


def test_sqlite_connections_are_wal_sync_at_checkpoints_only_and_take_turns(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'driftbench.db'}")
    try:
        with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                # 1 is NORMAL: in WAL mode a commit no longer waits for an fsync.
                assert connection.execute(text("PRAGMA synchronous")).scalar() == 1
                assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
                # Writers take turns on the lock file (tests/app/core/test_sqlite_writers.py).
                assert isinstance(connection.connection.dbapi_connection, TurnTakingConnection)
    finally:
        engine.dispose()
