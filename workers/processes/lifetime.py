"""Child processes that must not outlive their parent, even when it is SIGKILLed."""

from __future__ import annotations

import os
import threading

CHECK_INTERVAL_S = 1.0


def die_with_parent(parent_pid: int) -> None:
    """Exit this process as soon as `parent_pid` is no longer its parent.

    The parent passes its pid because it may die while the child is still starting.
    A watcher thread rather than Linux's PR_SET_PDEATHSIG, which fires when the
    parent *thread* that started the child exits, and the server starts children
    from short-lived request threads.
    """
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            threading.Event().wait(CHECK_INTERVAL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
