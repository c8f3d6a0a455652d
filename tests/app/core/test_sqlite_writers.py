"""SQLite writers take turns on the writer lock (app/core/sqlite_writers.py): a writer
waits in the kernel for the one before it, never in SQLite's sleeping busy handler. The
other side of each check is a real second process or connection opened with SQLite's
busy timeout at 0, which fails at once wherever it meets SQLite's own lock."""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.core import sqlite_writers
from app.core.db import make_engine
from app.core.sqlite_writers import TurnTakingConnection, lock_path

CHILD = """
import sqlite3, sys
from app.core.sqlite_writers import TurnTakingConnection
connection = sqlite3.connect(sys.argv[1], timeout=0, factory=TurnTakingConnection)
print(connection.execute("SELECT count(*) FROM t").fetchone()[0], flush=True)
if sys.argv[2] == "write":
    connection.execute("INSERT INTO t VALUES (2)")
    connection.commit()
print("done", flush=True)
"""


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "driftbench.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    return path


def connect(database: Path, timeout: float = 30) -> sqlite3.Connection:
    return sqlite3.connect(database, timeout=timeout, factory=TurnTakingConnection)


@pytest.fixture
def writing(database: Path) -> Iterator[sqlite3.Connection]:
    """A connection in the middle of a write transaction."""
    connection = connect(database)
    connection.execute("INSERT INTO t VALUES (1)")
    yield connection
    connection.close()


def lock_is_free(database: Path) -> bool:
    """Whether another open file could take the writer lock now."""
    fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def waiting_for_flock(pid: int) -> bool:
    """Whether `pid` is blocked on an flock: a line of /proc/locks such as
    '1: -> FLOCK  ADVISORY  WRITE 4242 fe:00:2146457 0 EOF'."""
    lines = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
    return any(fields[1:3] == ["->", "FLOCK"] and fields[5] == str(pid) for fields in lines)


def child(database: Path, action: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(database), action],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[3],
    )


def test_a_write_transaction_holds_the_lock_from_its_first_write_to_its_end(
    database: Path,
) -> None:
    connection = connect(database)
    connection.execute("SELECT count(*) FROM t").fetchone()
    assert lock_is_free(database)  # reading takes no turn
    connection.execute("INSERT INTO t VALUES (1)")
    assert not lock_is_free(database)
    connection.execute("INSERT INTO t VALUES (2)")
    connection.commit()
    assert lock_is_free(database)
    connection.execute("DELETE FROM t")
    assert not lock_is_free(database)
    connection.rollback()
    assert lock_is_free(database)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        connection.execute("INSERT INTO missing VALUES (1)")  # began no transaction
    assert lock_is_free(database)
    with pytest.raises(sqlite3.IntegrityError):
        connection.execute("INSERT INTO t VALUES (1)")  # its transaction goes on
    assert not lock_is_free(database)
    connection.close()
    assert lock_is_free(database)


def test_a_second_writer_waits_for_the_lock_and_then_writes(
    database: Path, writing: sqlite3.Connection
) -> None:
    other = child(database, "write")
    assert other.stdout is not None
    assert other.stdout.readline().strip() == "0"  # it reads while the first one writes
    deadline = time.monotonic() + 60
    while not waiting_for_flock(other.pid):
        assert other.poll() is None, other.communicate()
        assert time.monotonic() < deadline, "the second writer never waited for the lock"
        time.sleep(0.01)
    writing.commit()
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0, err  # with a busy timeout of 0: it never met SQLite's lock
    assert out.strip() == "done"
    assert writing.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,)]


def test_every_way_a_transaction_ends_gives_the_turn_back(database: Path) -> None:
    connection = connect(database)
    with connection:  # commits without calling commit()
        connection.execute("/* a comment first */ INSERT INTO t VALUES (1)")
        assert not lock_is_free(database)
    assert lock_is_free(database)
    connection.executescript("BEGIN; INSERT INTO t VALUES (2); COMMIT;")
    assert lock_is_free(database)
    connection.execute("SAVEPOINT outer")
    assert not lock_is_free(database)
    connection.execute("INSERT INTO t VALUES (3)")
    connection.execute("RELEASE outer")  # the transaction it opened ends with it
    assert not connection.in_transaction
    assert lock_is_free(database)
    assert connection.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (2,), (3,)]
    connection.close()


def test_sessions_of_the_service_engine_take_turns(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'driftbench.db'}")
    database = tmp_path / "driftbench.db"
    try:
        with engine.begin() as setup:
            setup.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
        with Session(engine) as session:
            session.execute(text("SELECT count(*) FROM t"))
            assert lock_is_free(database)
            session.execute(text("INSERT INTO t VALUES (1)"))
            with session.begin_nested():
                session.execute(text("INSERT INTO t VALUES (2)"))
            assert not lock_is_free(database)
            session.commit()
            assert lock_is_free(database)
            session.execute(text("DELETE FROM t"))
            assert not lock_is_free(database)
        assert lock_is_free(database)  # the pool rolled it back as the session closed
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 2
    finally:
        engine.dispose()


def test_a_child_forked_during_a_write_does_not_keep_the_lock(
    database: Path, writing: sqlite3.Connection
) -> None:
    release, hold = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child holds on until told, then leaves without cleaning up
        os.close(hold)
        os.read(release, 1)
        os._exit(0)
    os.close(release)
    try:
        writing.commit()
        wait_until_free(database)
    finally:
        os.write(hold, b"x")
        os.close(hold)
        os.waitpid(pid, 0)


def test_a_writer_that_waits_too_long_gives_up_and_leaves_the_lock_free(
    database: Path, writing: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writers, "WAIT_S", 0.2)
    failed: list[BaseException] = []

    def write() -> None:  # another thread, its own connection: another open lock file
        waiting = connect(database)
        try:
            waiting.execute("INSERT INTO t VALUES (3)")
        except sqlite3.OperationalError as error:
            failed.append(error)
        finally:
            waiting.close()

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert len(failed) == 1 and "no turn to write within 0.2 s" in str(failed[0])
    writing.commit()
    wait_until_free(database)  # the abandoned wait takes the lock, then drops it
    assert writing.execute("SELECT x FROM t").fetchall() == [(1,)]


class Interrupted(Exception):
    pass


def test_a_wait_interrupted_leaves_the_lock_free_once_its_holder_is_done(
    database: Path, writing: sqlite3.Connection
) -> None:
    def interrupt(*_: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    waiting = connect(database)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            waiting.execute("INSERT INTO t VALUES (3)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    writing.commit()
    wait_until_free(database)
    waiting.execute("INSERT INTO t VALUES (3)")  # its next write takes a turn as usual
    assert not lock_is_free(database)
    waiting.commit()
    assert lock_is_free(database)
    waiting.close()


def wait_until_free(database: Path) -> None:
    """Until an abandoned wait's helper has taken the lock and dropped it, and nothing
    else holds it (a child's copy is closed once the child runs)."""
    deadline = time.monotonic() + 60
    while any(t.name == "sqlite-writer-turn" for t in threading.enumerate()) or not (
        lock_is_free(database)
    ):
        assert time.monotonic() < deadline, "the writer lock stayed held"
        time.sleep(0.01)
