"""Processes and their descendants through /proc: what a job process or Chromium left running."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

# /proc/<pid>/stat fields after the command name: state is field 3, so index = field - 3.
STATE, PARENT, START_TIME = 0, 1, 19


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    return stat[stat.rfind(")") + 2 :].split()


def parent_of(pid: int) -> int | None:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[PARENT])


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie (which runs nothing)."""
    fields = stat_fields(pid)
    return fields is not None and fields[STATE] != "Z"


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(entry.name)
            if fields is not None and fields[STATE] != "Z":
                parents[int(entry.name)] = int(fields[PARENT])
    return parents


def descendants(pid: int | None = None) -> list[int]:
    """Live (non-zombie) descendants of `pid` (default: this process)."""
    root = os.getpid() if pid is None else pid
    parents = _parents()
    found: list[int] = []
    frontier = [root]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found.extend(children)
        frontier.extend(children)
    return found


def identities(pids: list[int]) -> dict[int, str]:
    """Each pid with its start time: together they name one process, even after the pid
    is reused by another."""
    found = {}
    for pid in pids:
        fields = stat_fields(pid)
        if fields is not None:
            found[pid] = fields[START_TIME]
    return found


def kill_all(processes: dict[int, str]) -> None:
    """SIGKILL each process of `identities()` that is still the same process."""
    for pid, started in processes.items():
        fields = stat_fields(pid)
        if fields is not None and fields[START_TIME] == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def chromium_processes(pid: int | None = None) -> list[int]:
    """Chromium processes started (through Playwright's driver) by this process."""
    return [child for child in descendants(pid) if "chrom" in command_name(child)]
