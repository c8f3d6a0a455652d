"""SQLite writers take turns on a file lock, so a writer waiting for another wakes the
moment it commits.

SQLite lets one connection write at a time; one that finds the database locked sleeps
in its busy handler for 1, 2, 5, 10, 15... ms before it looks again, however soon the
lock is free. A run's job processes write dozens of times each (claims, outputs
recorded, divergence rows), and the browser's job waited out those sleeps between its
pages: 3.5 sleeps a dense10x50 run, on the run's longest path. Here a connection takes
an exclusive `flock` on a file beside the database before the statement that begins
its write transaction and gives it back when the transaction ends; the kernel wakes
the next writer at once (after WAIT_S it gives up, as SQLite's busy timeout would). A
writer that bypasses it (another program, DDL outside a transaction) still meets
SQLite's own lock and busy handler, as before.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# How long a writer waits for its turn before "database is locked", as long as the
# busy timeout app/core/db.py gives SQLite: a transaction held that long is a fault to
# report, not to wait out.
WAIT_S = 30.0

# Statements that begin a transaction in Python's sqlite3 (its legacy transaction
# control opens one before these, and only these).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

# The lock files this thread holds, by path: a connection opened inside another's write
# transaction on the same thread (which would wait for it forever) does not take the
# lock, and meets SQLite's busy handler instead.
_held = threading.local()
# Every lock descriptor this process holds: a child forked meanwhile closes its copies,
# which would otherwise hold the lock (flock belongs to the open file) until it exits.
_open_fds: set[int] = set()


def _close_in_child() -> None:
    for fd in list(_open_fds):
        os.close(fd)
    _open_fds.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _wait_for_turn(fd: int, timeout_s: float) -> bool:
    """Wait for the lock on `fd` for up to `timeout_s`: True once it is held. The wait
    blocks in a helper thread, so it ends the moment the lock is free and still has an
    end; a helper that gets the lock after its caller gave up closes `fd`, unlocking."""
    taken = threading.Event()
    guard = threading.Lock()
    abandoned = False

    def take() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with guard:
            if abandoned:
                os.close(fd)
            else:
                taken.set()

    threading.Thread(target=take, name="sqlite-writer-turn", daemon=True).start()
    if taken.wait(timeout_s):
        return True
    with guard:
        abandoned = not taken.is_set()
        return not abandoned


def lock_path(database: str | Path) -> Path:
    return Path(f"{database}-writers.lock")


def _held_paths() -> set[str]:
    paths: set[str] | None = getattr(_held, "paths", None)
    if paths is None:
        paths = _held.paths = set()
    return paths


class TurnTakingConnection(sqlite3.Connection):
    """A sqlite3 connection (the `factory` of `sqlite3.connect`) whose write transactions
    hold the database's writer lock (`lock_path`) from their first write to their end."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        # An in-memory database has one connection, nothing to take turns with.
        in_memory = database in ("", ":memory:") or str(database).startswith("file:")
        self._lock_path = None if in_memory else str(lock_path(database))
        self._lock_fd: int | None = None
        # The held paths of the thread that took the lock (it may be closed by another).
        self._holder: set[str] = set()

    def cursor(self, factory: Any = None) -> sqlite3.Cursor:
        return super().cursor(factory or _TurnTakingCursor)

    # sqlite3's own shortcuts make their cursor without calling `cursor`.
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        return self.cursor().executemany(sql, parameters)

    def take_turn(self, sql: str) -> None:
        """Before `sql` runs: wait for the writer lock if it begins a write transaction."""
        if self._lock_path is None or self._lock_fd is not None or self.in_transaction:
            return
        if not sql.lstrip()[:7].upper().startswith(_WRITES):
            return
        held = _held_paths()
        if self._lock_path in held:
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not _wait_for_turn(fd, WAIT_S):
                raise sqlite3.OperationalError(
                    f"database is locked: no turn to write within {WAIT_S:g} s "
                    f"({self._lock_path} held by another writer)"
                ) from None
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd, self._holder = fd, held
        _open_fds.add(fd)
        held.add(self._lock_path)

    def end_turn(self) -> None:
        """Once no transaction is open: give the writer lock back."""
        if self._lock_fd is not None and not self.in_transaction:
            self._unlock()

    def _unlock(self) -> None:
        """Closing the descriptor unlocks."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            self._holder.discard(self._lock_path or "")
            _open_fds.discard(fd)
            os.close(fd)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.end_turn()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.end_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._unlock()


class _TurnTakingCursor(sqlite3.Cursor):
    connection: TurnTakingConnection

    def execute(self, sql: str, parameters: Any = (), /) -> _TurnTakingCursor:
        self.connection.take_turn(sql)
        try:
            super().execute(sql, parameters)
        finally:
            self.connection.end_turn()  # a failed first write opened no transaction
        return self

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> _TurnTakingCursor:
        self.connection.take_turn(sql)
        try:
            super().executemany(sql, parameters)
        finally:
            self.connection.end_turn()
        return self
