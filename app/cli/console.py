"""What the command line shows a person while it works: no C++ log noise, and a line
of progress per backend.

TensorFlow, absl and LiteRT write to file descriptor 2 from C++ before Python can
configure anything ("failed call to cuInit: ... CUDA error" reads like a failure on
every CPU machine). Unless `--verbose`, descriptor 2 goes to a log file for the
command's lifetime while Python's own `sys.stderr` keeps the terminal; the log is kept
and named when the command fails, deleted otherwise.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import TextIO

from workers.engine.status import BackendStatus

# Python warnings TensorFlow raises from its own code on every run (its calibrator still
# builds the deprecated tf.lite.Interpreter).
NOISY_WARNINGS = (r".*tf\.lite\.Interpreter is deprecated.*",)
# A run shorter than this shows no live progress on a terminal.
PROGRESS_AFTER_S = 1.0
REFRESH_S = 0.5


def _descriptor(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


class NativeLog:
    """File descriptor 2 captured to a file (see the module docstring)."""

    def __init__(self) -> None:
        handle, name = tempfile.mkstemp(prefix="driftbench-native-", suffix=".log")
        self.path = Path(name)
        self._terminal = os.dup(2)
        sys.stderr.flush()
        os.dup2(handle, 2)
        os.close(handle)
        # Python's own stream keeps the terminal; one that is not descriptor 2 already
        # (a test's capture) is left alone.
        self._previous: TextIO | None = None
        if _descriptor(sys.stderr) == 2:
            self._previous = sys.stderr
            sys.stderr = os.fdopen(
                os.dup(self._terminal),
                "w",
                buffering=1,
                encoding=sys.stderr.encoding,
                errors=sys.stderr.errors,
            )
        for pattern in NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def close(self, failed: bool) -> None:
        """Give descriptor 2 back whatever happens (a broken pipe while flushing must not
        leave the terminal silenced); keep the log only when the command failed."""
        try:
            sys.stderr.flush()
        except OSError:
            pass
        finally:
            os.dup2(self._terminal, 2)
            os.close(self._terminal)
            if self._previous is not None:
                sys.stderr.close()
                sys.stderr = self._previous
        kept = failed and self.path.exists() and self.path.stat().st_size > 0
        if kept:
            print(f"driftbench: native log (TensorFlow, LiteRT): {self.path}", file=sys.stderr)
        else:
            self.path.unlink(missing_ok=True)


class Progress:
    """Per backend: queued, running with its elapsed time, done or failed with the
    reason. On a terminal, one line redrawn in place once the run has taken a second;
    piped, a plain line per change."""

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.live = stream.isatty()
        self.started = time.perf_counter()
        self._states: dict[str, tuple[str, float, str | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._drawn = False
        self._thread: threading.Thread | None = None
        if self.live and not quiet:
            self._thread = threading.Thread(target=self._redraw, daemon=True)
            self._thread.start()

    def update(self, backend: str, status: str, reason: str | None = None) -> None:
        """A backend's new status (run_locally's on_status); piped, printed at once."""
        now = time.perf_counter()
        with self._lock:
            previous = self._states.get(backend)
            if previous is not None and previous[0] == status:
                return
            # Running: when it started; finished: how long it ran.
            started = previous[1] if previous is not None else now
            since = now if status == BackendStatus.RUNNING else now - started
            self._states[backend] = (status, since, reason)
        if not self.quiet and not self.live and status != BackendStatus.QUEUED:
            print(self._describe(backend, live=False), file=self.stream, flush=True)

    def _describe(self, backend: str, live: bool = True) -> str:
        """A backend's state in words; a running one with its elapsed time on the live
        line only (a piped line is printed once, when it starts)."""
        status, since, reason = self._states[backend]
        if status == BackendStatus.RUNNING:
            elapsed = f" {time.perf_counter() - since:.1f} s" if live else ""
            return f"{backend}: running{elapsed}"
        if status == BackendStatus.QUEUED:
            return f"{backend}: queued"
        took = f"{since:.1f} s"
        return f"{backend}: {status} ({took}" + (f": {reason})" if reason else ")")

    def _line(self) -> str:
        with self._lock:
            return " | ".join(self._describe(backend) for backend in self._states)

    def _redraw(self) -> None:
        self._stop.wait(PROGRESS_AFTER_S)
        while not self._stop.is_set():
            line = self._line()
            width = os.get_terminal_size(self.stream.fileno()).columns - 1
            self.stream.write("\r" + line[:width].ljust(width))
            self.stream.flush()
            self._drawn = True
            self._stop.wait(REFRESH_S)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop redrawing and clear the live line (also when the run raised)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._drawn:
            width = os.get_terminal_size(self.stream.fileno()).columns - 1
            self.stream.write("\r" + " " * width + "\r")
            self.stream.flush()
