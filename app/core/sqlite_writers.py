"""SQLite writers take turns on a file lock, so a writer waiting for another wakes the
moment it commits.

SQLite lets one connection write at a time; one that finds the database locked sleeps
in its busy handler for 1, 2, 5, 10, 15... ms before it looks again, however soon the
lock is free. A run's job processes write dozens of times each (claims, outputs
recorded, divergence rows), and the browser's job waited out those sleeps between its
pages: 3.5 sleeps a dense10x50 run, on the run's longest path. Here a connection takes
an exclusive `flock` on a file beside the database before the statement that begins
its write transaction and gives it back when the transaction ends; the kernel wakes
the next writer at once. A turn is waited for up to WAIT_S, then the write fails with
"database is locked" as SQLite's busy timeout would fail it.

The turns only order the writers that take them: SQLite's own lock still guards the
database. A writer that takes none (another program, a transaction this module does
not see begin, a lock file it cannot open) meets SQLite's lock and busy handler, as
before.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# How long a writer waits for its turn before "database is locked", as long as the
# busy timeout app/core/db.py gives SQLite: a transaction held that long is a fault to
# report, not to wait out.
WAIT_S = 30.0

# The statements that open a transaction: Python's sqlite3 begins one before the first
# four (after any leading comments), and the others begin one themselves.
_BEGINS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN", "SAVEPOINT")

# Every connection of this process and every lock file descriptor it opened: a child
# forked meanwhile closes its copies, which would otherwise keep the lock (an flock
# belongs to the open file) until the child exits, and forgets them.
_connections: weakref.WeakSet[TurnTakingConnection] = weakref.WeakSet()
_open_fds: set[int] = set()


def _forget_in_child() -> None:
    for connection in list(_connections):
        connection._lock_fd = None
    for fd in list(_open_fds):
        os.close(fd)
    _open_fds.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _close(fd: int) -> None:
    """Close a lock file descriptor this process opened, unlocking it."""
    _open_fds.discard(fd)
    os.close(fd)


def lock_path(database: str | Path) -> Path:
    return Path(f"{database}-writers.lock")


def _database_file(database: str | Path) -> str | None:
    """The file behind a `sqlite3.connect` database argument; None in memory."""
    name = os.fspath(database)
    if name.startswith("file:"):
        parts = urlsplit(name)
        if "mode=memory" in parts.query:
            return None
        name = parts.path
    return None if name in ("", ":memory:") else name


def _first_keyword(sql: str) -> str:
    """The statement's first word, past whitespace and comments (as sqlite3 reads it)."""
    rest = sql
    while True:
        rest = rest.lstrip()
        if rest.startswith("--"):
            rest = rest.partition("\n")[2]
        elif rest.startswith("/*"):
            rest = rest.partition("*/")[2]
        else:
            return rest[:9].upper()


def _wait_for_turn(fd: int, timeout_s: float) -> bool:
    """Wait for the lock on `fd` for up to `timeout_s`. True: it is held. Otherwise
    (False, or the wait interrupted) `fd` is no longer the caller's: it is closed, or
    the helper thread that waits for the lock closes it once it gets it. The wait blocks
    in that helper, so it ends the moment the lock is free and still has an end."""
    taken = threading.Event()
    guard = threading.Lock()
    abandoned = False

    def take() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with guard:
            if abandoned:
                _close(fd)
            else:
                taken.set()

    try:
        threading.Thread(target=take, name="sqlite-writer-turn", daemon=True).start()
    except BaseException:
        _close(fd)
        raise
    try:
        if taken.wait(timeout_s):
            return True
    except BaseException:
        with guard:
            if taken.is_set():
                _close(fd)
            else:
                abandoned = True
        raise
    with guard:
        if taken.is_set():
            return True
        abandoned = True
    return False


class TurnTakingConnection(sqlite3.Connection):
    """A sqlite3 connection (the `factory` of `sqlite3.connect`) whose write transactions
    hold the database's writer lock (`lock_path`) from their first statement to their
    end."""

    def __init__(self, database: str | Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        file = _database_file(database)
        self._lock_path = None if file is None else str(lock_path(file))
        self._lock_fd: int | None = None
        _connections.add(self)

    def cursor(self, factory: Any = None) -> sqlite3.Cursor:
        return super().cursor(factory or _TurnTakingCursor)

    # sqlite3's own shortcuts make their cursor without calling `cursor`.
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        return self.cursor().executescript(script)

    def take_turn(self, sql: str) -> None:
        """Before `sql` runs: wait for the writer lock if it opens a write transaction."""
        if self._lock_path is None or self._lock_fd is not None or self.in_transaction:
            return
        if not _first_keyword(sql).startswith(_BEGINS):
            return
        try:
            fd = os.open(self._lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:  # a lock file this process may not open: SQLite's lock alone
            return
        _open_fds.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not _wait_for_turn(fd, WAIT_S):
                raise sqlite3.OperationalError(
                    f"database is locked: no turn to write within {WAIT_S:g} s "
                    f"({self._lock_path} held by another writer)"
                ) from None
        except BaseException:
            _close(fd)
            raise
        self._lock_fd = fd

    def end_turn(self) -> None:
        """Once no transaction is open: give the writer lock back."""
        if self._lock_fd is not None and not self.in_transaction:
            self._unlock()

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            _close(fd)

    def ending(self, run: Callable[..., Any], *args: Any) -> Any:
        """`run(*args)`, a call that may end the transaction; the turn given back if so."""
        try:
            return run(*args)
        finally:
            self.end_turn()

    def commit(self) -> None:
        self.ending(super().commit)

    def rollback(self) -> None:
        self.ending(super().rollback)

    def __exit__(self, *exception: object) -> Any:
        return self.ending(super().__exit__, *exception)  # ends it without commit()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._unlock()


class _TurnTakingCursor(sqlite3.Cursor):
    connection: TurnTakingConnection

    def _in_turn(self, sql: str, run: Callable[..., object], *args: Any) -> _TurnTakingCursor:
        """`run(*args)` with the turn `sql` needs taken first, and given back after it if
        no transaction is left open (a failed first write opened none; a script may end
        its own)."""
        self.connection.take_turn(sql)
        self.connection.ending(run, *args)
        return self

    def execute(self, sql: str, parameters: Any = (), /) -> _TurnTakingCursor:
        return self._in_turn(sql, super().execute, sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> _TurnTakingCursor:
        return self._in_turn(sql, super().executemany, sql, parameters)

    def executescript(self, script: str, /) -> _TurnTakingCursor:
        return self._in_turn(script, super().executescript, script)
