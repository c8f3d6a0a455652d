"""How the embedded SQLite database is opened: every connection, not only the first."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from app.core.db import make_engine


def test_sqlite_connections_are_wal_and_sync_at_checkpoints_only(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'driftbench.db'}")
    try:
        with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                # 1 is NORMAL: in WAL mode a commit no longer waits for an fsync.
                assert connection.execute(text("PRAGMA synchronous")).scalar() == 1
                assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()
