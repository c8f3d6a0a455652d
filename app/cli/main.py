"""The `driftbench` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.cli import check
from app.cli.console import NativeLog, Progress
from app.cli.terminal_tables import amplification_line, backend_line, comparison_table
from app.cli.zoo import add_zoo_parser
from app.core.config import MiB, settings
from workers.backends.execution import run_locally
from workers.backends.pool import RunnerPool
from workers.backends.registry import (
    BACKEND_IDS,
    DEFAULT_BACKENDS,
    DEFAULT_REFERENCE,
    parse_backends,
)
from workers.diagnosis.runs import run_diagnoser
from workers.engine.compare import Comparison, compare
from workers.engine.errors import DriftbenchError, InvalidRequest
from workers.engine.examples import EXAMPLES, write_example, write_examples
from workers.engine.external import external_backend, read_external_outputs
from workers.engine.inputs import GENERATOR_KINDS, InputRecipe, generate_inputs, load_input_file
from workers.engine.keras_env import import_keras
from workers.engine.loading import ModelArtifact, load_artifact
from workers.engine.report import drift_report
from workers.engine.results import MODES, BackendResult, Mode
from workers.engine.status import BackendStatus

# Requests still open this long after a stop is asked for (a run read that waits for its
# end, up to 60 s) are cut short, so the job processes are closed before anything that
# stops the server gives up waiting and kills it.
GRACEFUL_SHUTDOWN_S = 5


def resolve_model(model: str) -> Path:
    """A path to a model file, or the name of an example (built on first use)."""
    path = Path(model)
    if path.exists() or model not in EXAMPLES:
        return path
    cached = settings.data_dir / "examples" / f"{model}.keras"
    return cached if cached.exists() else write_example(model, cached.parent)


def _modes(choice: str) -> tuple[Mode, ...]:
    return MODES if choice == "both" else (choice,)  # type: ignore[return-value]


def run_and_compare(
    artifact: ModelArtifact,
    inputs: dict[str, np.ndarray],
    *,
    backends: list[str],
    against: str,
    modes: tuple[Mode, ...],
    repeats: int,
    externals: Sequence[tuple[str, Path]] = (),
    progress: Progress | None = None,
) -> tuple[dict[str, BackendResult], list[Comparison]]:
    """Every backend run here, external outputs read, every comparison diagnosed."""
    options = settings.engine_options()
    with RunnerPool(options) as pool, progress or contextlib.nullcontext():
        results = run_locally(
            pool,
            artifact,
            inputs,
            backends=backends,
            reference=against,
            modes=modes,
            repeats=repeats,
            on_status=None if progress is None else progress.update,
        )
    results.update(
        external_results(externals, results.get(against), settings.max_stored_output_bytes)
    )
    diagnose = run_diagnoser(artifact.graph, inputs, results, fed_from=against, options=options)
    comparisons = compare(
        artifact.graph, results, against=against, modes=modes, options=options, diagnose=diagnose
    )
    return results, comparisons


def drift_command(
    artifact: ModelArtifact,
    inputs: dict[str, np.ndarray],
    input_label: str,
    *,
    backends: list[str],
    against: str,
    modes: tuple[Mode, ...],
    repeats: int,
    json_path: Path | None,
    externals: Sequence[tuple[str, Path]] = (),
    quiet: bool = False,
) -> int:
    """Run, compare, print the tables; exit status 1 when a backend failed."""
    results, comparisons = run_and_compare(
        artifact,
        inputs,
        backends=backends,
        against=against,
        modes=modes,
        repeats=repeats,
        externals=externals,
        progress=Progress(sys.stderr, quiet=quiet),
    )
    if not quiet:
        print(
            f"model {artifact.graph.name} ({artifact.path.name}), inputs {input_label}, "
            f"reference {against}"
        )
        for result in results.values():
            print(backend_line(result))
    for comparison in comparisons:
        print()
        print(comparison_table(comparison))
    by_key = {(c.backend, c.mode): c for c in comparisons}
    pairs = [
        (by_key[b, "accumulated"], by_key[b, "isolated"])
        for b, m in by_key
        if m == "accumulated" and (b, "isolated") in by_key
    ]
    if pairs:
        print()
    for accumulated, isolated in pairs:
        print(amplification_line(accumulated, isolated))
    if json_path is not None:
        report = drift_report(
            artifact,
            inputs,
            input_label,
            reference=against,
            thresholds=settings.engine_options().thresholds,
            results=results,
            comparisons=comparisons,
        )
        json_path.write_text(json.dumps(report, indent=2, allow_nan=False))
        if not quiet:
            print(f"\nfull results written to {json_path}")
    return 1 if any(result.status == BackendStatus.FAILED for result in results.values()) else 0


def _external_argument(text: str) -> tuple[str, Path]:
    """'NAME=FILE.npz' as (ext:NAME, the file), the file checked to exist."""
    name, equals, file = text.partition("=")
    if not equals or not file:
        raise InvalidRequest(f"--external {text!r}: expected NAME=FILE.npz")
    path = Path(file)
    if not path.is_file():
        raise InvalidRequest(f"--external {text!r}: no file {path}")
    return external_backend(name), path


def external_results(
    externals: Sequence[tuple[str, Path]], reference: BackendResult | None, max_bytes: int
) -> dict[str, BackendResult]:
    """Each port's outputs as a finished backend, checked against the reference's shapes."""
    if not externals:
        return {}
    if reference is None or reference.status != BackendStatus.DONE:
        raise InvalidRequest("external outputs are compared with the reference, which did not run")
    shapes = {layer: array.shape for layer, array in reference.outputs["accumulated"].items()}
    return {
        backend: BackendResult(
            backend=backend,
            status=BackendStatus.DONE,
            outputs={"accumulated": read_external_outputs(path, shapes, max_bytes)},
            environment={"external": True, "file": str(path)},
        )
        for backend, path in externals
    }


def load_run_inputs(
    args: argparse.Namespace,
) -> tuple[ModelArtifact, dict[str, np.ndarray], str]:
    """The model and its inputs as `run` and `check` name them: a file, or a generator."""
    import_keras(settings.onednn)  # before an example model's build imports TensorFlow
    artifact = load_artifact(resolve_model(args.model), settings.engine_options())
    if args.inputs is not None:
        inputs = load_input_file(
            args.inputs,
            artifact.graph.input_shapes,
            settings.max_input_bytes,
            artifact.graph.input_dtypes,
        )
        return artifact, inputs, str(args.inputs)
    recipe = InputRecipe(
        kind=args.generate,
        batch=args.batch,
        seed=args.seed,
        low=args.low,
        high=args.high,
        mean=args.mean,
        std=args.std,
    )
    inputs = generate_inputs(recipe, artifact.graph.input_shapes, artifact.graph.input_dtypes)
    return artifact, inputs, f"{recipe.kind} batch={recipe.batch} seed={recipe.seed}"


def cmd_run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    artifact, inputs, label = load_run_inputs(args)
    externals = [_external_argument(text) for text in args.external]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.json is not None and args.inputs is None:
        written = args.json.with_name(f"{args.json.stem}.inputs.npz")
        np.savez(written, **inputs)
        if not args.quiet:
            print(f"generated inputs written to {written} (feed your port these)")
    status = drift_command(
        artifact,
        inputs,
        label,
        backends=parse_backends(args.backends),
        against=parse_backends(args.against)[0],
        modes=_modes(args.mode),
        repeats=args.repeats,
        json_path=args.json,
        externals=externals,
        quiet=args.quiet,
    )
    if not args.quiet:
        print(f"\ntook {time.perf_counter() - started:.2f} s")
    return status


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when no layer of any backend is at or beyond `--fail-on`, 1 when one is
    (or a backend crashed), 2 on bad input (the usual errors)."""
    artifact, inputs, _ = load_run_inputs(args)
    against = parse_backends(args.against)[0]
    externals = [_external_argument(text) for text in args.external]
    results, comparisons = run_and_compare(
        artifact,
        inputs,
        backends=parse_backends(args.backends),
        against=against,
        modes=_modes(args.mode),
        repeats=1,
        externals=externals,
        progress=Progress(sys.stderr, quiet=args.quiet),
    )
    found = check.failures(comparisons, args.fail_on)
    crashed = check.failed_backends(results, reference=against)
    if args.junit is not None:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_text(
            check.junit_xml(comparisons, results, args.fail_on, crashed), encoding="utf-8"
        )
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(
            check.markdown_summary(
                artifact.graph.name, comparisons, results, args.fail_on, crashed
            ),
            encoding="utf-8",
        )
    # Layers that fail the gate are an answer, not a crash: the native log is kept only
    # when a backend or the reference did not run.
    args.native_log_useful = bool(crashed)
    for failure in found:
        print(f"FAIL {failure.message}")
    for backend, reason in crashed.items():
        print(f"FAIL {backend}: {reason}")
    for backend, result in results.items():
        if result.status in (BackendStatus.UNSUPPORTED, BackendStatus.SKIPPED):
            print(f"not run: {backend} {result.status}: {result.reason}")
    if not found and not crashed:
        layers = sum(len(comparison.layers) for comparison in comparisons)
        print(
            f"ok: {layers} layers on {len(comparisons)} backend/mode pairs, none at or beyond "
            f"{args.fail_on}"
        )
        return 0
    print(
        f"failed: {len(found)} layer(s) at or beyond {args.fail_on}, "
        f"{len(crashed)} backend(s) failed"
    )
    return 1


def cmd_examples(args: argparse.Namespace) -> int:
    for path in write_examples(args.directory):
        print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The service end to end on the embedded default: upload, run everywhere, read back."""
    from app.cli.demo import run_demo

    return run_demo(settings.data_dir / "examples")


def write_port_file(path: Path, port: int) -> None:
    """Tell whoever started `serve --port 0` which port it got. Written to a temporary
    file and renamed into place, so a reader polling `path` never sees half a number."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n")
    temporary.replace(path)


def cmd_serve(args: argparse.Namespace) -> int:
    """Bind the listening socket here and hand it to uvicorn: with `--port 0` the OS picks
    a free port at bind time, and only this process can report it (a port found free
    earlier and bound later may have been taken in between)."""
    import uvicorn
    from uvicorn.main import STARTUP_FAILURE

    from app.core.db import DatabaseUnavailable, wait_for_database

    settings.host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    try:
        wait_for_database(settings.db_startup_timeout_s)
    except DatabaseUnavailable as error:
        print(f"driftbench serve: {error}", file=sys.stderr)
        return 2
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        listener = socket.create_server((settings.host, port), family=family)
    except OSError as error:
        print(
            f"driftbench serve: cannot listen on {settings.host}:{port}: {error}", file=sys.stderr
        )
        return 1
    host, bound_port = listener.getsockname()[:2]
    if args.port_file is not None:
        write_port_file(args.port_file, bound_port)
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"driftbench serve: listening on http://{url_host}:{bound_port}", file=sys.stderr)
    server = uvicorn.Server(
        uvicorn.Config(
            "app.main:app",
            log_level=args.log_level,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
    )
    server.run(sockets=[listener])
    # What `uvicorn.run` would return for a server whose start-up failed.
    return 0 if server.started else STARTUP_FAILURE


def queue_list(text: str) -> list[str]:
    from workers.celery_app import QUEUES

    queues = list(dict.fromkeys(q.strip() for q in text.split(",") if q.strip()))
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        raise argparse.ArgumentTypeError(
            f"unknown queue(s) {unknown or text!r}; queues: {', '.join(QUEUES)}"
        )
    return queues


def cmd_worker(args: argparse.Namespace) -> int:
    """A Celery worker for the given queues, announcing its backends while it runs."""
    from workers.celery_app import celery
    from workers.worker_registry import Heartbeat

    queues = args.queues
    name = f"{'-'.join(queues)}-{socket.gethostname()}-{os.getpid()}"
    heartbeat = Heartbeat(name, queues)
    heartbeat.start()
    try:
        celery.worker_main(
            [
                "worker",
                "--queues",
                ",".join(queues),
                "--pool",
                "solo",
                "--hostname",
                f"{name}@%h",
                "--loglevel",
                args.log_level,
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        heartbeat.stop()
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from app.core.db import session_factory
    from app.core.migrate import upgrade_database
    from app.data.tokens import create_token

    upgrade_database()
    with session_factory()() as session:
        token = create_token(session, name=args.name, scope=args.scope)
    print(token)
    print(f"({args.scope} token {args.name!r}: shown once, stored only as a hash)", file=sys.stderr)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from app.core.migrate import upgrade_database

    upgrade_database()
    print(f"database at {settings.resolved_database_url} is at the latest schema")
    return 0


def cmd_outputs_expire(args: argparse.Namespace) -> int:
    """One retention sweep, as the server does hourly; for cron, or a server that is off."""
    from app.core.migrate import upgrade_database
    from app.data.retention import expire_outputs

    days = settings.output_retention_days
    if days is None:
        print(
            "driftbench outputs expire: set DRIFTBENCH_OUTPUT_RETENTION_DAYS to the age in "
            "days past which a run's layer outputs are deleted",
            file=sys.stderr,
        )
        return 2
    upgrade_database()
    expired = expire_outputs(days)
    print(
        f"deleted the layer outputs of {expired.runs} run(s) finished more than {days} days "
        f"ago ({expired.backend_runs} backend runs): {expired.bytes} bytes "
        f"({expired.bytes / MiB:.1f} MiB); their metrics and divergence rows remain"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Print every figure with its target; exit 1 when a target was missed."""
    from app.bench.figures import table
    from app.bench.suite import OPTIONAL_PARTS, PARTS, run_bench

    unknown = sorted(set(args.only) - set(PARTS) - set(OPTIONAL_PARTS))
    if unknown:
        every = ",".join(PARTS + OPTIONAL_PARTS)
        print(f"driftbench bench: unknown part(s) {unknown}; parts: {every}")
        return 2

    print(f"driftbench bench: {', '.join(args.only)} (the table grows as parts finish)")
    print("| figure | value | target | met | measured / baseline |")
    print("|---|---|---|---|---|")
    figures = run_bench(
        args.only,
        args.json,
        repeats=args.repeats,
        runs=args.runs,
        query_seconds=args.query_seconds,
        postgres_admin_url=args.postgres,
        idle_wait_s=args.idle_wait_s,
    )
    print()
    print(table(figures))
    print(f"\nreport: {args.json}")
    return 1 if any(figure.met is False for figure in figures) else 0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, its inputs and the backends: what `run` and `check` share."""
    parser.add_argument(
        "model", help=f"a .keras/.h5 file, or an example name ({', '.join(EXAMPLES)})"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--inputs", type=Path, help=".npy (one input) or .npz keyed by input name")
    source.add_argument("--generate", choices=GENERATOR_KINDS, default="uniform")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--low", type=float, default=-1.0, help="uniform/randint lower bound")
    parser.add_argument(
        "--high", type=float, default=1.0, help="uniform upper bound; randint's, exclusive"
    )
    parser.add_argument("--mean", type=float, default=0.0, help="normal mean")
    parser.add_argument("--std", type=float, default=1.0, help="normal standard deviation")
    parser.add_argument(
        "--backends",
        default=",".join(DEFAULT_BACKENDS),
        help=f"comma-separated, from: {', '.join(BACKEND_IDS)}",
    )
    parser.add_argument(
        "--against", default=DEFAULT_REFERENCE, help="the reference every backend is compared with"
    )
    parser.add_argument("--mode", choices=[*MODES, "both"], default="accumulated")
    parser.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="NAME=FILE.npz",
        help="your own port's outputs, keyed by layer name, compared as backend ext:NAME",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress and no per-backend status lines"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="let TensorFlow's and LiteRT's own C++ logs through to the terminal",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one model on several backends and print the drift")
    add_run_arguments(run)
    run.add_argument("--repeats", type=int, default=1, help="runs per backend, for determinism")
    run.add_argument(
        "--json",
        type=Path,
        help="write the full results here (and generated inputs beside, <name>.inputs.npz)",
    )
    run.set_defaults(handler=cmd_run)

    checked = commands.add_parser(
        "check", help="run and judge: exit 1 when a layer is at or beyond --fail-on (for CI)"
    )
    add_run_arguments(checked)
    checked.add_argument(
        "--fail-on",
        choices=check.FAIL_ON,
        default="mismatch",
        help="the verdict at or beyond which a layer fails (severity: identical, rounding, "
        "reduced-precision, mismatch, nonfinite)",
    )
    checked.add_argument("--junit", type=Path, help="write a JUnit XML report here")
    checked.add_argument("--markdown", type=Path, help="write a Markdown summary here")
    checked.set_defaults(handler=cmd_check)

    examples = commands.add_parser("examples", help="write the example models to a directory")
    examples.add_argument("directory", type=Path)
    examples.set_defaults(handler=cmd_examples)

    serve = commands.add_parser("serve", help="start the HTTP API (applies migrations first)")
    serve.add_argument("--host", help=f"bind address (default {settings.host})")
    serve.add_argument("--port", type=int, help=f"port (default {settings.port}; 0: any free port)")
    serve.add_argument(
        "--port-file", type=Path, help="once listening, write the bound port here (for --port 0)"
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser(
        "worker", help="start a Celery worker (DRIFTBENCH_EXECUTOR=celery)"
    )
    worker.add_argument(
        "--queues", type=queue_list, default=["cpu"], help="comma-separated: cpu, browser, gpu"
    )
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(handler=cmd_worker)

    token = commands.add_parser("token", help="API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", choices=["read", "write"], required=True)
    create.set_defaults(handler=cmd_token_create)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply Alembic migrations")
    upgrade.set_defaults(handler=cmd_db_upgrade)

    outputs = commands.add_parser("outputs", help="stored layer outputs")
    outputs_commands = outputs.add_subparsers(dest="outputs_command", required=True)
    expire = outputs_commands.add_parser(
        "expire",
        help="delete the layer outputs of runs older than DRIFTBENCH_OUTPUT_RETENTION_DAYS",
    )
    expire.set_defaults(handler=cmd_outputs_expire)

    add_zoo_parser(commands)

    demo = commands.add_parser(
        "demo", help="start the service, run dense10x50 on every backend, print the drift"
    )
    demo.set_defaults(handler=cmd_demo)

    from app.bench.quiet import IDLE_WAIT_S
    from app.bench.suite import OPTIONAL_PARTS, PARTS

    bench = commands.add_parser(
        "bench", help="measure driftbench against bare baselines and print the ratios"
    )
    bench.add_argument(
        "--only",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=list(PARTS),
        help=f"comma-separated parts to run (default: {','.join(PARTS)}; "
        f"also: {','.join(OPTIONAL_PARTS)})",
    )
    bench.add_argument("--repeats", type=int, default=5, help="timed repeats per figure")
    bench.add_argument("--runs", type=int, default=10_000, help="stored runs for the queries")
    bench.add_argument(
        "--query-seconds",
        type=float,
        default=15.0,
        help="how long each database is queried while a run lands every second",
    )
    bench.add_argument(
        "--idle-wait-s",
        type=float,
        default=IDLE_WAIT_S,
        help="the longest wait for an idle machine before each part (0: start at once, "
        "on a machine known to be busy)",
    )
    bench.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL admin URL; the query bench creates and drops a database there",
    )
    bench.add_argument("--json", type=Path, default=Path("bench-results/bench.json"))
    bench.set_defaults(handler=cmd_bench)
    return parser


def exit_status(error: DriftbenchError) -> int:
    """The same errors the API answers with a status: 2 when the user must change the
    command, its model or inputs (a 4xx), 1 when the machine failed (a 5xx)."""
    return 2 if error.is_users_fault else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    native = None if getattr(args, "verbose", True) else NativeLog()
    status = 1
    try:
        status = args.handler(args)
    except DriftbenchError as error:
        print(f"driftbench: error: {error.detail}", file=sys.stderr)
        status = exit_status(error)
    finally:
        if native is not None:
            native.close(failed=status != 0 and getattr(args, "native_log_useful", True))
    return status


if __name__ == "__main__":
    sys.exit(main())
