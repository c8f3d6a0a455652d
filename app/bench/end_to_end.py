"""End to end: `POST /api/runs` until "done" on every CPU backend, embedded mode (each
job in its supervised job process), against the sum of each backend's warm floor
(the all-layers model's compiled predict function on each batch, our numpy port's own
forward pass, the warm TF.js page predicting and reading every output); the sum of
the old cold baselines (Keras `predict`, a fresh TF.js page per browser backend) is
reported beside it, and so is the CPU time a run costs, over the cores: the least the
run could take on this machine.

The floors and the service's runs are timed in turn, a block of each at a time, both
kept warm, as every other job and its floor are. Timed one after the other, floors
first, the figure followed the machine's speed between the two: on a 2-core AMD EPYC
(Zen 4) the same server's run took 134 ms in one minute and 186 ms a few minutes
later, and two runs of the part read 1.90 and 1.99x where four in turn (and three
of a prototype of it) read 1.67-1.80x. The bench's warm runners, idle while the
service runs, cost it nothing measurable there (162 against 167 ms a run, 263 against
267 core-ms, six blocks of each alternated)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app.bench.backend_jobs import bare_predict, example_job
from app.bench.figures import LEAST_REPEATS, Figure, median, ratio, timed
from app.bench.tfjs_pages import COLD_REPEATS, TFJS_BACKENDS, bare_page, tfjs_runner, warm_page
from app.service_process import LiveServer
from driftbench.client import MAX_WAIT_S, Client
from workers.backends.pool import RunnerPool
from workers.backends.registry import DEFAULT_REFERENCE, runner_class
from workers.engine.loading import ModelArtifact
from workers.engine.options import EngineOptions
from workers.engine.status import BackendStatus, RunStatus
from workers.processes.tree import (
    SYSTEM_TIME,
    USER_TIME,
    chromium_processes,
    command_name,
    descendants,
    stat_fields,
)

MODEL, BATCH = "dense10x50", 256
# Calls before a warm floor is timed, and runs before the service is: a fresh page's
# wasm and shaders are still being optimised over its first calls (tfjs-wasm's floor
# took 23 ms after one call, 7 ms after a few; the four pages' floors summed 149 ms
# after 10 calls, 102 ms after the TF.js part's hundreds).
FLOOR_WARMUP = 30


def cpu_backends(options: EngineOptions) -> list[str]:
    candidates = ["keras-cpu", "numpy", *TFJS_BACKENDS]
    return [name for name in candidates if runner_class(name).availability(options) is None]


def served(data_dir: Path, database_url: str | None = None) -> LiveServer:
    """The service as the benchmarks measure it: `driftbench serve`, embedded mode, its own
    data dir, no tokens (loopback)."""
    return LiveServer(data_dir, database_url, auth="off")


def bare_backend(
    pool: RunnerPool, backend: str, artifact: ModelArtifact, inputs: dict[str, Any], *, warm: bool
) -> Callable[[], Any]:
    """The least work that gives every layer of one backend for these inputs; with
    `warm` False, a TF.js backend's old cold baseline (a fresh page)."""
    if backend == "keras-cpu":
        return bare_predict(artifact, inputs, pool.options, per_batch=warm)
    if backend.startswith("tfjs-"):
        runner = tfjs_runner(pool, backend)
        if warm:
            return warm_page(runner, artifact, inputs).delivered
        return bare_page(runner, artifact, list(next(iter(inputs.values())).shape))
    other = pool.runner(backend)
    return lambda: other.run(artifact, inputs)


def timed_run(client: Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Seconds from `POST /api/runs` to the run's end, and the run as the API gives it:
    each read waits at the server for the end (`?wait_s=`), which answers as it comes."""
    started = time.perf_counter()
    run = client.wait_for_run(client.start_run(**body)["id"], timeout_s=3600, poll_s=MAX_WAIT_S)
    return time.perf_counter() - started, run


def recorded_seconds(backend_run: dict[str, Any]) -> float:
    """A backend's job as its run records it: started to recorded finished (its
    comparison on arrival included)."""
    started = datetime.fromisoformat(backend_run["started_at"])
    return (datetime.fromisoformat(backend_run["finished_at"]) - started).total_seconds()


def run_to_done(client: Client, body: dict[str, Any]) -> float:
    """Seconds from `POST /api/runs` to the run being done on every backend."""
    elapsed, run = timed_run(client, body)
    failed = [b["backend"] for b in run["backend_runs"] if b["status"] != BackendStatus.DONE]
    if run["status"] != RunStatus.DONE or failed:
        raise RuntimeError(f"bench run {run['id']} did not finish cleanly: {run}")
    return elapsed


def _role(pid: int, root: int, root_role: str, chromium: set[int]) -> str:
    if pid == root:
        return root_role
    if pid in chromium:
        return "chromium"
    return "playwright driver" if command_name(pid).startswith("node") else "job processes"


def cpu_seconds_by_role(
    root: int, root_role: str = "server", excluding: Collection[int] = ()
) -> dict[str, float]:
    """CPU time so far of a process and every process under it but those `excluding`,
    summed by role: the root (the server, or the bench's own process timing the floors),
    the job processes (any other Python under it), Chromium, Playwright's driver."""
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    chromium = set(chromium_processes(root))
    seconds: dict[str, float] = {}
    for pid in [root, *descendants(root)]:
        fields = None if pid in excluding else stat_fields(pid)
        if fields is not None:
            used = (int(fields[USER_TIME]) + int(fields[SYSTEM_TIME])) / ticks_per_s
            role = _role(pid, root, root_role, chromium)
            seconds[role] = seconds.get(role, 0.0) + used
    return seconds


def core_bound(what: str, core_s: dict[str, float], floors_s: float, label: str) -> Figure:
    """CPU time (`core_s`, seconds by role) spread perfectly over the cores this process
    may use, against the sum of the warm floors. For a run: the least it could take here
    for the CPU time it costs; where that is over the target, no order of the run's steps
    can meet it on this machine, only less work. For the floors themselves: how much of
    the cores they already keep busy, so what is left for the rest of a run's work."""
    cores = len(os.sched_getaffinity(0))
    return Figure(
        f"CPU time of {what} spread over {cores} cores vs sum of warm floors {label}",
        sum(core_s.values()) / cores / floors_s,
        "x",
        detail={"core_ms_per_run": {role: 1000 * s for role, s in core_s.items()}},
    )


@dataclass
class InTurn:
    """What `in_turn` measured: each backend's floor and each run, in seconds, and the CPU
    seconds by role of one call of every floor and of one run."""

    floor_s: dict[str, list[float]] = field(default_factory=dict)
    run_s: list[float] = field(default_factory=list)
    floors_core_s: dict[str, float] = field(default_factory=dict)
    run_core_s: dict[str, float] = field(default_factory=dict)


# Calls of each side timed before the other's: the CPU time is read between blocks (a walk
# of /proc that would otherwise fall on each call it follows).
BLOCK = 5


def _add_used(total: dict[str, float], before: dict[str, float], after: dict[str, float]) -> None:
    for role, seconds in after.items():
        total[role] = total.get(role, 0.0) + seconds - before.get(role, 0.0)


def in_turn(
    floors: Mapping[str, Callable[[], Any]], run: Callable[[], Any], repeats: int, server: int
) -> InTurn:
    """A round of the warm floors (one call of each backend) and a run of the service
    (`server`: its process), `repeats` of each, timed a block of each in turn; the floors'
    CPU time is this process's and those under it but the server's."""
    measured = InTurn(floor_s={name: [] for name in floors})
    while len(measured.run_s) < repeats:
        calls = min(BLOCK, repeats - len(measured.run_s))
        service = {server, *descendants(server)}
        before = cpu_seconds_by_role(os.getpid(), "bench process", service)
        for _ in range(calls):
            for name, call in floors.items():
                measured.floor_s[name] += timed(call, 1, 0)
        after = cpu_seconds_by_role(os.getpid(), "bench process", service)
        _add_used(measured.floors_core_s, before, after)
        before = cpu_seconds_by_role(server)
        measured.run_s += timed(run, calls, 0)
        _add_used(measured.run_core_s, before, cpu_seconds_by_role(server))
    for used in (measured.floors_core_s, measured.run_core_s):
        for role in used:
            used[role] /= repeats
    return measured


def end_to_end(directory: Path, repeats: int, pool: RunnerPool) -> list[Figure]:
    repeats = max(repeats, LEAST_REPEATS)
    # The floors' runners start here, whatever parts ran before: a TF.js page is replaced
    # after PAGE_JOBS jobs (workers/backends/tfjs/browser_host.py), and the TF.js part's
    # jobs would otherwise decide whether that falls among the floors' timed calls (with
    # its six warm-up calls a figure, all 20 then ran on a new page).
    pool.close()
    artifact, inputs = example_job(MODEL, BATCH, directory, pool.options)
    backends = cpu_backends(pool.options)
    floored = [DEFAULT_REFERENCE, *backends]
    cold = {
        name: median(timed(bare_backend(pool, name, artifact, inputs, warm=False), COLD_REPEATS, 0))
        for name in floored
    }
    floors = {name: bare_backend(pool, name, artifact, inputs, warm=True) for name in floored}
    for call in floors.values():
        timed(call, 0, FLOOR_WARMUP)
    with served(directory / "e2e") as server, server.client(timeout_s=600) as client:
        _, body = client.prepare_run(artifact.path, backends, batch=BATCH)
        # As warm as the floors.
        for _ in range(FLOOR_WARMUP):
            run_to_done(client, body)
        measured = in_turn(floors, lambda: run_to_done(client, body), repeats, server.pid)
    # The bench's own warm runners (its Chromium and pages, TensorFlow, keras-jax's child)
    # go with the part; later parts start them again.
    pool.close()
    warm = {name: median(seconds) for name, seconds in measured.floor_s.items()}
    label = f"({MODEL}, batch {BATCH}, {len(warm)} backends)"
    floors_s = sum(warm.values())
    name = f"POST /api/runs to done vs sum of warm floors {label}"
    figure = ratio(name, measured.run_s, [floors_s], 1.3)
    figure.detail["floor_s"] = warm
    old = ratio(
        f"POST /api/runs to done vs sum of cold bare backends, the old baseline {label}",
        measured.run_s,
        [sum(cold.values())],
        None,
    )
    old.detail["bare_s"] = cold
    return [
        figure,
        core_bound("a run", measured.run_core_s, floors_s, label),
        core_bound("the warm floors themselves", measured.floors_core_s, floors_s, label),
        old,
    ]
