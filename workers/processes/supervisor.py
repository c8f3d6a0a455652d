"""Supervised job processes: a job that crashes, runs out of memory or hangs ends itself only.

driftbench runs untrusted models through native code (TensorFlow, oneDNN, BLAS,
Chromium). Under oneDNN a failed allocation is a segfault, not an exception, and
the kernel's OOM killer takes whatever process is largest; so no job runs in the
process that serves the API or takes Celery tasks. Each capability (cpu, browser,
gpu) keeps warm job processes; the supervisor sends one job at a time, watches
the process's resident memory (its children's included: Chromium; pages they share
counted once) and the time, and stops it over DRIFTBENCH_JOB_MEMORY_LIMIT_BYTES or
DRIFTBENCH_BACKEND_TIME_LIMIT_S.
A dead process is replaced by the next job; the reason becomes the job's failure.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from workers.processes.child import JobWorker, serve
from workers.processes.tree import descendants, identities, kill_all, proc_file

WATCH_INTERVAL_S = 0.1
TREE_REFRESH_S = 1.0
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 10.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class JobLimits:
    memory_bytes: int
    time_s: float


@dataclass(frozen=True)
class JobAnswer:
    """A job's result, with the seconds the job took inside its process (what the same
    call would cost without isolation) and as the supervisor saw it (pipe and watch)."""

    result: Any
    job_s: float
    supervised_s: float


class JobProcessDied(Exception):
    """The job's process ended (signal, exit, memory or time limit); the message says how."""


class JobFailed(Exception):
    """The job raised in its process; the process lives on. The message is the reason."""


class ShuttingDown(Exception):
    """The supervisor is closing: the job was not run, or was stopped unfinished, and is
    left for the next start (a run's recovery, or the broker's re-delivery) to run again."""


def resident_bytes(pid: int) -> int:
    try:
        return int((proc_file(pid, "statm") or "").split()[1]) * PAGE_SIZE
    except (IndexError, ValueError):
        return 0


def proportional_bytes(pid: int) -> int:
    """The process's proportional set size: a page it shares with n - 1 others counts
    1/n. Summed over a job's processes it counts each page once, where resident sizes
    count Chromium's shared pages once per process (MobileNetV2's browser job: 11.9 GiB
    resident summed). Reading it walks the page tables, so it is read only past the
    limit; where it cannot be read, the resident size stands."""
    try:
        for line in (proc_file(pid, "smaps_rollup") or "").splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (IndexError, ValueError):
        pass
    return resident_bytes(pid)


def death_reason(label: str, exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        reason = f"crashed: {label} job process killed by {name} (signal {number})"
        if number == signal.SIGKILL:
            reason += ", sent by the kernel's out-of-memory killer or by a person"
        return reason
    return f"crashed: {label} job process exited with code {exitcode}"


class JobProcess:
    """One warm child process of one capability, running one job at a time."""

    def __init__(self, capability: str, worker: JobWorker) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=serve,
            args=(child_end, capability, worker, os.getpid()),
            daemon=True,
            name=f"driftbench-job-{capability}",
        )
        self.process.start()
        child_end.close()
        self.pid: int = self.process.pid  # type: ignore[assignment]
        # What the process started, as last seen: killed with it, even once re-parented.
        # Read at most once a TREE_REFRESH_S, across jobs too: a scan of /proc takes 5 ms
        # of the server's CPU, where a small model's job takes tens.
        self._tree: dict[int, str] = {}
        self._tree_read = 0.0
        try:
            ready = self.connection.poll(START_TIMEOUT_S) and self.connection.recv()
        except (EOFError, OSError):
            ready = None
        if not ready:
            self.stop()
            raise JobProcessDied(
                death_reason(f"{capability} start-up", self.process.exitcode)
                if self.process.exitcode is not None
                else f"crashed: the {capability} job process did not start within "
                f"{START_TIMEOUT_S:.0f} s"
            )

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def run(self, job: Any, label: str, limits: JobLimits) -> JobAnswer:
        """The job's answer, or JobFailed (it raised) or JobProcessDied (the process ended,
        or was stopped over a limit; either way it is dead when this returns)."""
        started = time.monotonic()
        try:
            self.connection.send(job)
            shared_read = 0.0
            shared = 0  # resident bytes counted more than once, as last measured
            while not self.connection.poll(WATCH_INTERVAL_S):
                now = time.monotonic()
                if not self.process.is_alive():
                    break
                if now - self._tree_read > TREE_REFRESH_S:
                    self._tree, self._tree_read = identities(descendants(self.pid)), now
                pids = [self.pid, *self._tree]
                resident = sum(map(resident_bytes, pids))
                # Past the limit summed, the shared part is measured again each second,
                # and afresh before a stop.
                over = resident > limits.memory_bytes
                stale = now - shared_read > TREE_REFRESH_S
                if over and (resident - shared > limits.memory_bytes or stale):
                    shared, shared_read = resident - sum(map(proportional_bytes, pids)), now
                if resident - shared > limits.memory_bytes:
                    raise JobProcessDied(
                        f"out of memory: the {label} job process exceeded "
                        f"DRIFTBENCH_JOB_MEMORY_LIMIT_BYTES ({limits.memory_bytes}) with "
                        f"{(resident - shared) / 1e9:.1f} GB resident and was stopped"
                    )
                if now - started > limits.time_s:
                    raise JobProcessDied(
                        f"timed out: the {label} job ran longer than "
                        f"DRIFTBENCH_BACKEND_TIME_LIMIT_S ({limits.time_s:.0f} s) and its "
                        "process was stopped"
                    )
            answer = self.connection.recv()
        except (EOFError, OSError):
            self.kill()
            raise JobProcessDied(death_reason(label, self.process.exitcode)) from None
        except JobProcessDied:
            self.kill()
            raise
        if "error" in answer:
            raise JobFailed(answer["error"])
        return JobAnswer(answer["result"], answer["seconds"], time.monotonic() - started)

    def kill(self) -> None:
        """SIGKILL the process and whatever it started (Chromium would outlive it), also
        what it had started before it died and its children were re-parented."""
        tree = dict(self._tree)
        if self.process.is_alive():  # not yet reaped: the pid is still this process's
            tree.update(identities(descendants(self.pid)))
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        kill_all(tree)
        self.process.join(STOP_TIMEOUT_S)
        self.connection.close()

    def stop(self) -> None:
        """Ask the process to exit after its current job; kill it if it does not."""
        if self.process.is_alive():
            with contextlib.suppress(OSError):
                self.connection.send(None)
            self.process.join(STOP_TIMEOUT_S)
        self.kill()


class JobProcesses:
    """Warm job processes per capability, started on demand: one per job running at once
    (the embedded executor's run threads, a Celery worker's one task), kept when idle."""

    def __init__(self, limits: JobLimits, worker: JobWorker) -> None:
        self.worker = worker
        self.limits = limits
        self._idle: dict[str, list[JobProcess]] = {}
        self._busy: set[JobProcess] = set()
        self._lock = threading.Lock()
        self._closed = False

    def _take(self, capability: str) -> JobProcess:
        with self._lock:
            if self._closed:
                raise ShuttingDown(f"job processes are closing; {capability} job not started")
            idle = self._idle.setdefault(capability, [])
            process = idle.pop() if idle else None
        if process is not None and not process.alive:
            process.stop()
            process = None
        if process is None:
            try:
                process = JobProcess(capability, self.worker)
            except OSError as error:  # no process could be spawned (EAGAIN, ENOMEM, EMFILE)
                raise JobProcessDied(
                    f"crashed: the {capability} job process could not start: {error}"
                ) from error
        with self._lock:
            self._busy.add(process)
        return process

    def run(self, capability: str, job: Any, label: str) -> JobAnswer:
        """Run `job` in a warm process of `capability`; a process that died is replaced."""
        process = self._take(capability)
        try:
            return process.run(job, label, self.limits)
        except JobProcessDied:
            if self._closed:
                raise ShuttingDown(f"{label} job stopped unfinished: shutting down") from None
            raise
        finally:
            with self._lock:
                self._busy.discard(process)
                keep = process.alive and not self._closed
                if keep:
                    self._idle[capability].append(process)
            if not keep:
                process.stop()

    def close(self) -> None:
        """Stop every job process, busy ones included: their jobs end as ShuttingDown."""
        with self._lock:
            self._closed = True
            processes = [p for idle in self._idle.values() for p in idle]
            self._idle.clear()
            busy = list(self._busy)
        for process in processes:
            process.stop()
        for process in busy:
            process.kill()
