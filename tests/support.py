"""What several test modules share beyond fixtures (tests/conftest.py) and beyond running
the service from outside (app/service_process.py, used by the demo and the bench too):
holding a backend's jobs mid-run, a throwaway PostgreSQL database, seeded weights,
making a run's outputs old enough to expire, reading the CLI's tables.

`wait_for` (from app/service_process.py) is how a test waits: a fixed `time.sleep(N)`
before an assertion is too short on a loaded machine (a flaky failure) and too long on
an idle one (a slow suite); polling the condition itself in small steps is neither.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from app.service_process import postgres_database
from driftbench.client import wait_for
from workers.processes.gate import hold_path, started_path
from workers.processes.tree import is_running

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLE_TITLE = re.compile(r"^[\w.:/+-]+ vs [\w.:/+-]+ \((accumulated|isolated)\)$")


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A new, empty database on the local PostgreSQL, dropped afterwards."""
    with postgres_database(POSTGRES_ADMIN_URL, prefix="driftbench_test") as url:
        yield url


def dense_stack(keras: Any, seed: int, path: Path) -> Path:
    """A ten-layer Dense(8) stack: same architecture, different weights per seed."""
    model = keras.Sequential(
        [keras.Input((8,), name="x"), *[keras.layers.Dense(8, name=f"d{i}") for i in range(10)]]
    )
    randomize_weights(model, seed=seed)
    model.save(path)
    return path


def randomize_weights(model: Any, seed: int) -> None:
    """Seeded weights with every entry non-trivial (variances kept positive; integer
    state such as a Normalization's sample count left as it is)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if "float" not in str(variable.dtype):
                continue
            if variable.name in ("moving_variance", "variance"):
                value = rng.uniform(0.5, 1.5, shape)
            else:
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 4
                value = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
            variable.assign(value.astype(np.float32))


# Holding a backend's jobs mid-run (DRIFTBENCH_TEST_JOB_GATE_DIR), to crash them for sure.


def hold(gate_dir: Path, backend: str) -> None:
    gate_dir.mkdir(parents=True, exist_ok=True)
    hold_path(gate_dir, backend).touch()


def release(gate_dir: Path, backend: str) -> None:
    hold_path(gate_dir, backend).unlink(missing_ok=True)


def wait_until_held(gate_dir: Path, run_id: int, backend: str, timeout_s: float = 180) -> int:
    """The pid of the job process holding `backend` of `run_id`, once it is mid-run."""
    started = started_path(gate_dir, run_id, backend)
    wait_for(started.exists, timeout_s, f"{backend} of run {run_id} to be held mid-run")
    return int(started.read_text())


def wait_until_gone(pid: int, timeout_s: float = 30) -> None:
    """A job process outlives a killed supervisor by up to a second (it polls its parent);
    released before it is gone, it would go on with its job."""
    wait_for(
        lambda: not is_running(pid),
        timeout_s,
        f"job process {pid} to exit after its supervisor was killed",
    )


# Output retention: runs made to look old, and the command that expires their outputs.


def backdate(database_url: str, run_id: int, days: float) -> None:
    """Make a run look as if it finished `days` ago."""
    from sqlalchemy import create_engine, update
    from sqlalchemy.orm import Session

    from app.data.orm import Run, utcnow

    engine = create_engine(database_url)
    with Session(engine) as session:
        finished = utcnow() - timedelta(days=days)
        session.execute(update(Run).where(Run.id == run_id).values(finished_at=finished))
        session.commit()
    engine.dispose()


def expire_outputs_cli(data_dir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """`driftbench outputs expire` as a user runs it, on a server's data dir (and database)."""
    env = {k: v for k, v in os.environ.items() if k != "DRIFTBENCH_OUTPUT_RETENTION_DAYS"}
    env["DRIFTBENCH_DATA_DIR"] = str(data_dir)
    env.update({f"DRIFTBENCH_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run(
        [str(Path(sys.executable).with_name("driftbench")), "outputs", "expire"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def parse_tables(stdout: str) -> dict[str, list[dict[str, str]]]:
    """The per-layer tables printed by `driftbench run` and `driftbench demo`, keyed by
    their title line ("<backend> vs <reference> (<mode>)")."""
    tables: dict[str, list[dict[str, str]]] = {}
    lines = stdout.splitlines()
    for index, line in enumerate(lines):
        if TABLE_TITLE.match(line) and index + 2 < len(lines):
            header = lines[index + 1].split()
            rows = []
            for row in lines[index + 3 :]:
                if row.startswith("drift starts"):
                    break
                rows.append(dict(zip(header, row.split(), strict=True)))
            tables[line] = rows
    return tables
