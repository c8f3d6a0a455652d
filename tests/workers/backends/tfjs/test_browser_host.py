"""The warm browser survives hung pages and killed processes, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from driftbench.client import wait_for
from workers.backends.tfjs.browser_host import BrowserHost, BrowserJobFailed
from workers.engine.options import EngineOptions
from workers.processes.tree import chromium_processes, command_name, descendants, parent_of


def alive(pid: int) -> bool:
    """True while the process exists, zombies included (a zombie still holds its pid)."""
    return Path(f"/proc/{pid}").exists()


def browser_main_pid(others: set[int]) -> int:
    """The Chromium browser process apart from `others` (another browser of this process,
    such as the runner pool's): the one whose parent is not itself Chromium."""
    pids = set(chromium_processes()) - others
    [main] = [pid for pid in pids if "chrom" not in command_name(parent_of(pid) or 0)]
    return main


def test_hung_page_is_retried_after_a_restart_then_failed(
    engine_options: EngineOptions,
) -> None:
    host = BrowserHost(engine_options.chromium_path)
    try:

        async def never_finishes(context: Any) -> None:
            page = await context.new_page()
            await page.evaluate("new Promise(() => {})")

        with pytest.raises(
            BrowserJobFailed,
            match=r"did not finish within 2 s; after a browser "
            r"restart the page again did not finish",
        ):
            host.run(never_finishes, timeout_s=2)
        assert host.restarts == 1

        async def title(context: Any) -> str:
            page = await context.new_page()
            await page.set_content("<title>still alive</title>")
            return await page.title()

        assert host.run(title, timeout_s=30) == "still alive"
    finally:
        host.close()


def test_browser_killed_mid_job_is_restarted_and_the_job_completes(
    engine_options: EngineOptions,
) -> None:
    """The first attempt waits in its page for ever: the kill lands mid-job for sure."""
    others = set(chromium_processes())
    host = BrowserHost(engine_options.chromium_path)
    try:
        kill_the_browser_mid_job(host, others)
    finally:
        host.close()


def kill_the_browser_mid_job(host: BrowserHost, others: set[int]) -> None:
    attempts: list[int] = []
    in_page = threading.Event()

    async def job(context: Any) -> str:
        attempts.append(len(attempts) + 1)
        page = await context.new_page()
        await page.set_content("<title>finished</title>")
        if len(attempts) == 1:
            in_page.set()
            await page.evaluate("new Promise(() => {})")
        return await page.title()

    outcome: dict[str, str] = {}
    worker = threading.Thread(target=lambda: outcome.update(title=host.run(job, timeout_s=120)))
    worker.start()
    assert in_page.wait(timeout=120), "the job never reached its page"
    # The killed browser's own processes: a browser shared by other tests of this process
    # may start a (spare) renderer meanwhile, which is not this one's to end.
    main = browser_main_pid(others)
    killed_pids = sorted([main, *descendants(main)])
    os.kill(main, signal.SIGKILL)
    worker.join(timeout=300)
    assert outcome == {"title": "finished"}
    assert attempts == [1, 2]
    assert host.restarts == 1
    wait_for(
        lambda: not any(alive(pid) for pid in killed_pids),
        timeout_s=10,
        what=f"every process of the killed browser to exit: {killed_pids}",
    )


def test_no_chromium_survives_the_worker_process(tmp_path: Path) -> None:
    script = (
        "from pathlib import Path\n"
        "from app.core.config import settings\n"
        "from workers.backends.execution import run_locally\n"
        "from workers.backends.pool import RunnerPool\n"
        "from workers.engine.examples import write_example\n"
        "from workers.engine.inputs import InputRecipe, generate_inputs\n"
        "from workers.engine.loading import load_artifact\n"
        "from workers.processes.tree import chromium_processes\n"
        f"artifact = load_artifact(write_example('regression', Path({str(tmp_path)!r})))\n"
        "inputs = generate_inputs(InputRecipe('ones'), artifact.graph.input_shapes)\n"
        # The pool is never closed: the process's exit must end its Chromium.
        "pool = RunnerPool(settings.engine_options())\n"
        "result = run_locally(pool, artifact, inputs, backends=['tfjs-cpu'], reference='numpy')\n"
        "assert result['tfjs-cpu'].status == 'done', result['tfjs-cpu'].reason\n"
        "print(' '.join(map(str, chromium_processes())))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    pids = [int(pid) for pid in completed.stdout.split()]
    assert pids, "the worker should have had a running Chromium"
    wait_for(
        lambda: not any(alive(pid) for pid in pids),
        timeout_s=10,
        what=f"the worker's Chromium processes to exit with it: {pids}",
    )


def test_warm_page_is_kept_per_key_and_replaced_after_a_failure(
    engine_options: EngineOptions,
) -> None:
    host = BrowserHost(engine_options.chromium_path)
    try:

        async def count(page: Any, served: int) -> tuple[int, int]:
            calls = await page.evaluate("window.calls = (window.calls || 0) + 1")
            return calls, served

        def run(key: str, job: Any = count) -> Any:
            return host.run_in_page(key, "about:blank", job, timeout_s=30)

        assert [run("a"), run("a"), run("b"), run("a")] == [(1, 1), (2, 2), (1, 1), (3, 3)]

        async def throws(page: Any, served: int) -> None:
            await page.evaluate("(() => { throw new Error('bad model'); })()")

        with pytest.raises(BrowserJobFailed, match="bad model"):
            run("a", throws)
        assert run("a") == (1, 1)  # the failed page was closed, a fresh one opened
        assert run("b") == (2, 2)
        assert host.restarts == 0
    finally:
        host.close()
