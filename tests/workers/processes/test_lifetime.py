"""A child started with die_with_parent exits when its parent is SIGKILLed."""

import subprocess
import sys
from pathlib import Path

from driftbench.client import wait_for

PARENT = """
import multiprocessing, os, sys, time
from workers.processes.lifetime import die_with_parent

def child(parent_pid):
    die_with_parent(parent_pid)
    time.sleep(600)

if __name__ == "__main__":
    process = multiprocessing.get_context("spawn").Process(target=child, args=(os.getpid(),))
    process.start()
    print(process.pid, flush=True)
    time.sleep(600)
"""


def test_child_exits_when_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert Path(f"/proc/{child_pid}").exists()
    parent.kill()
    parent.wait()
    wait_for(
        lambda: not Path(f"/proc/{child_pid}").exists(),
        timeout_s=10,
        what=f"the child {child_pid} to exit with its killed parent",
    )
