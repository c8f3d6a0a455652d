"""A database made at migration 0003 upgrades in place to head, and the service serves it.

Users keep their databases across releases: `driftbench db upgrade` (or `serve`, which
upgrades on start) must carry every stored run, backend run, divergence row, API token
and cached aggregate across the migrations after 0003, unchanged. Tests that start
from an empty database never exercise that path, so this one builds the 0003 schema with
Alembic alone, fills it with plain SQL, upgrades it with the CLI a user runs, compares
every row, and reads the old data back through the real server with the old token.

The test imports nothing from `app` or `workers`: it drives the schema through Alembic
and subprocesses only, so it stays valid whatever modules the service is made of.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "migrations"
DRIFTBENCH = Path(sys.executable).with_name("driftbench")
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
OLD_REVISION = "0003"
COMMAND_TIMEOUT_S = 120
SERVER_START_TIMEOUT_S = 90

# Tokens as `driftbench token create` prints them ("dbt_" + 43 url-safe characters), made
# before the upgrade; the database holds only their SHA-256.
READ_TOKEN = "dbt_migration0003-read-token-kept-over-upgrades"
REVOKED_WRITE_TOKEN = "dbt_migration0003-revoked-write-token-stays-off"

# Column types that need SQLAlchemy's per-dialect bind processing (read from 0001-0003):
# JSON is serialised for SQLite and wrapped for psycopg; SQLite stores times as text.
JSON_COLUMNS = frozenset(
    {
        "tags",
        "layers",
        "backend_support",
        "params",
        "shapes",
        "modes",
        "environment",
        "timings",
        "histogram",
        "result",
    }
)
TIME_COLUMNS = frozenset({"created_at", "started_at", "finished_at"})

MODEL_ID, INPUT_SET_ID, RUN_ID = 7, 11, 42
ARCHITECTURE = "3f9c2a7be1d04c55"
CREATED = datetime(2026, 11, 20, 9, 30, 15, 123456, tzinfo=UTC)
STARTED = datetime(2026, 11, 20, 9, 30, 16, 250000, tzinfo=UTC)
FINISHED = datetime(2026, 11, 20, 9, 30, 21, 987654, tzinfo=UTC)

MODEL = {
    "id": MODEL_ID,
    "sha256": "ab" * 32,
    "name": "dense-4-8-3",
    "tags": ["migration", "dense"],
    "file_format": "keras",
    "size_bytes": 23_456,
    "architecture": ARCHITECTURE,
    "architecture_label": "InputLayer > Dense(relu) > Dense(softmax)",
    "layers": [
        {
            "name": "input_layer",
            "class_name": "InputLayer",
            "output_shape": [None, 4],
            "params": 0,
            "depth": 0,
        },
        {
            "name": "dense",
            "class_name": "Dense",
            "output_shape": [None, 8],
            "params": 40,
            "depth": 1,
        },
        {
            "name": "dense_1",
            "class_name": "Dense",
            "output_shape": [None, 3],
            "params": 27,
            "depth": 2,
        },
    ],
    "backend_support": {"numpy-f64": None, "keras-cpu": None, "tfjs-wasm": None},
    "created_at": CREATED,
}
INPUT_SET = {
    "id": INPUT_SET_ID,
    "model_id": MODEL_ID,
    "kind": "uniform",
    "params": {"batch": 2, "seed": 3, "low": -1.0, "high": 1.0},
    "shapes": {"input_layer": [2, 4]},
    "nonfinite": 0,
    "sha256": "cd" * 32,
    "created_at": CREATED,
}
RUN = {
    "id": RUN_ID,
    "model_id": MODEL_ID,
    "input_set_id": INPUT_SET_ID,
    "reference": "numpy-f64",
    "modes": ["accumulated"],
    "repeats": 1,
    "status": "done",
    "attempts": 1,
    "error": None,
    "created_at": CREATED,
    "finished_at": FINISHED,
}
BACKEND_RUNS = [
    {
        "id": 101,
        "run_id": RUN_ID,
        "backend": "numpy-f64",
        "status": "done",
        "attempts": 1,
        "reason": None,
        "environment": {"numpy": "1.26.4", "dtype": "float64"},
        "timings": {"load_s": 0.012, "run_s": 0.0031},
        "deterministic": True,
        "repeat_spread": 0.0,
        "outputs_path": f"runs/{RUN_ID}/numpy-f64.npz",
        "started_at": STARTED,
        "finished_at": FINISHED,
    },
    {
        "id": 102,
        "run_id": RUN_ID,
        "backend": "keras-cpu",
        "status": "done",
        "attempts": 2,
        "reason": None,
        "environment": {"keras": "3.10.0", "tensorflow": "2.21.0", "onednn": "default"},
        "timings": {"load_s": 1.5, "run_s": 0.25},
        "deterministic": False,
        "repeat_spread": 1.5e-9,
        "outputs_path": f"runs/{RUN_ID}/keras-cpu.npz",
        "started_at": STARTED,
        "finished_at": FINISHED,
    },
]


def divergence(
    row_id: int, layer: str, class_name: str, depth: int, verdict: str, **metrics: Any
) -> dict[str, Any]:
    """A keras-cpu vs numpy-f64 row with every metric column given."""
    return {
        "id": row_id,
        "run_id": RUN_ID,
        "model_id": MODEL_ID,
        "architecture": ARCHITECTURE,
        "backend": "keras-cpu",
        "against": "numpy-f64",
        "mode": "accumulated",
        "layer": layer,
        "class_name": class_name,
        "depth": depth,
        **metrics,
        "verdict": verdict,
    }


DIVERGENCES = [
    # Identical outputs: an infinite SQNR, which both databases must keep as infinity.
    divergence(
        201,
        "input_layer",
        "InputLayer",
        0,
        "identical",
        n=8,
        n_diff=0,
        frac_diff=0.0,
        max_abs=0.0,
        mean_abs=0.0,
        rmse=0.0,
        rel_l2=0.0,
        max_rel=0.0,
        max_ulp=0,
        median_ulp=0.0,
        cosine=1.0,
        sqnr_db=math.inf,
        p50_abs=0.0,
        p90_abs=0.0,
        p99_abs=0.0,
        argmax_agree=1.0,
        nonfinite_candidate=0,
        nonfinite_reference=0,
        nonfinite_mismatch=0,
        histogram={"edges": [-12.0, -9.0, -6.0], "counts": [0.0, 0.0]},
    ),
    divergence(
        202,
        "dense",
        "Dense",
        1,
        "rounding",
        n=16,
        n_diff=5,
        frac_diff=0.3125,
        max_abs=2.384185791015625e-07,
        mean_abs=4.76837158203125e-08,
        rmse=8.1e-08,
        rel_l2=3.25e-08,
        max_rel=1.1920928955078125e-07,
        max_ulp=3,
        median_ulp=0.5,
        cosine=0.9999999999999987,
        sqnr_db=149.75,
        p50_abs=0.0,
        p90_abs=1.1920928955078125e-07,
        p99_abs=2.2e-07,
        argmax_agree=1.0,
        nonfinite_candidate=0,
        nonfinite_reference=0,
        nonfinite_mismatch=0,
        histogram={"edges": [-9.0, -7.5, -6.0], "counts": [3.0, 2.0]},
    ),
    divergence(
        203,
        "dense_1",
        "Dense",
        2,
        "mismatch",
        n=6,
        n_diff=6,
        frac_diff=1.0,
        max_abs=0.75,
        mean_abs=0.3125,
        rmse=0.40625,
        rel_l2=0.4375,
        max_rel=12.5,
        max_ulp=9_007_199_254_740_993,
        median_ulp=1_048_576.0,
        cosine=0.875,
        sqnr_db=7.25,
        p50_abs=0.25,
        p90_abs=0.625,
        p99_abs=0.74,
        argmax_agree=0.5,
        nonfinite_candidate=1,
        nonfinite_reference=2,
        nonfinite_mismatch=3,
        histogram={"edges": [-1.0, 0.0, 1.0], "counts": [1.0, 5.0]},
    ),
]
API_TOKENS = [
    {
        "id": 1,
        "name": "ci-read",
        "scope": "read",
        "token_hash": hashlib.sha256(READ_TOKEN.encode()).hexdigest(),
        "revoked": False,
        "created_at": CREATED,
    },
    {
        "id": 2,
        "name": "old-write",
        "scope": "write",
        "token_hash": hashlib.sha256(REVOKED_WRITE_TOKEN.encode()).hexdigest(),
        "revoked": True,
        "created_at": CREATED,
    },
]
DRIFT_VERSIONS = [{"scope": f"model:{MODEL_ID}", "version": 3}]
DRIFT_AGGREGATES = [
    {
        "key": f"model:{MODEL_ID}|keras-cpu|numpy-f64|accumulated|rel_l2",
        "version": 3,
        "result": {"layers": [{"layer": "dense", "count": 1, "mean": 3.25e-08}]},
    }
]

# Insertion order (foreign keys first), each table with the column that orders its rows.
TABLES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "models": ("id", [MODEL]),
    "input_sets": ("id", [INPUT_SET]),
    "runs": ("id", [RUN]),
    "backend_runs": ("id", BACKEND_RUNS),
    "layer_divergences": ("id", DIVERGENCES),
    "api_tokens": ("id", API_TOKENS),
    "drift_versions": ("scope", DRIFT_VERSIONS),
    "drift_aggregates": ("key", DRIFT_AGGREGATES),
}
Snapshot = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


def service_env(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any DRIFTBENCH_* of the developer's shell (an
    executor or database setting there would change what is tested), plus ours."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DRIFTBENCH_")}
    env["DRIFTBENCH_DATABASE_URL"] = database_url
    env["DRIFTBENCH_DATA_DIR"] = str(data_dir)
    env.update({f"DRIFTBENCH_{name.upper()}": value for name, value in settings.items()})
    return env


def run_command(command: Sequence[str], env: Mapping[str, str], what: str) -> None:
    """Run a child to completion; a failure shows its output, which names the real cause."""
    done = subprocess.run(
        list(command),
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, (
        f"{what} exited with status {done.returncode}:\n{done.stdout[-3000:]}\n"
        f"{done.stderr[-3000:]}"
    )


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def create_schema_at(revision: str, env: Mapping[str, str]) -> None:
    """Alembic's upgrade to `revision`, in a child: migrations/env.py reads the database
    URL from the service's settings when imported, so it must see our environment."""
    script = (
        "from alembic import command; from alembic.config import Config; c = Config(); "
        f"c.set_main_option('script_location', {str(MIGRATIONS)!r}); "
        f"command.upgrade(c, {revision!r})"
    )
    run_command([sys.executable, "-c", script], env, f"alembic upgrade to {revision}")


def quoted(name: str) -> str:
    return f'"{name}"'


def insert_rows(connection: sa.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Plain INSERTs, with the JSON and time columns bound as the migrations typed them."""
    columns = list(rows[0])
    statement = sa.text(
        f"INSERT INTO {quoted(table)} ({', '.join(map(quoted, columns))}) "
        f"VALUES ({', '.join(f':{column}' for column in columns)})"
    ).bindparams(
        *(sa.bindparam(column, type_=sa.JSON()) for column in columns if column in JSON_COLUMNS),
        *(
            sa.bindparam(column, type_=sa.DateTime(timezone=True))
            for column in columns
            if column in TIME_COLUMNS
        ),
    )
    connection.execute(statement, rows)


def snapshot(connection: sa.Connection, columns: Mapping[str, list[str]] | None = None) -> Snapshot:
    """Every row of every table as the driver returns it, in primary-key order: all
    columns, or only `columns` per table (the ones that existed before the upgrade)."""
    tables: Snapshot = {}
    for table, (order_by, _) in TABLES.items():
        selected = ", ".join(map(quoted, columns[table])) if columns else "*"
        result = connection.execute(
            sa.text(f"SELECT {selected} FROM {quoted(table)} ORDER BY {quoted(order_by)}")
        )
        tables[table] = (list(result.keys()), [tuple(row) for row in result])
    return tables


def as_utc(value: Any) -> Any:
    """SQLite keeps no zone for DateTime(timezone=True); the values stored were UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def typed_rows(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row through the reflected (current) schema's types: JSON decoded, times parsed."""
    metadata = sa.MetaData()
    metadata.reflect(engine, only=list(TABLES))
    rows: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as connection:
        for name, (order_by, _) in TABLES.items():
            table = metadata.tables[name]
            result = connection.execute(sa.select(table).order_by(table.c[order_by]))
            rows[name] = [
                {column: as_utc(value) for column, value in row._mapping.items()} for row in result
            ]
    return rows


def json_value(value: Any) -> Any:
    """What the API sends for a stored value: JSON has no infinity, so 'inf'."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new empty database: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    import psycopg

    name = f"driftbench_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def log_tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-4000:] if log_path.exists() else "(no log)"


def answers_healthz(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def served(env: Mapping[str, str], data_dir: Path) -> Iterator[str]:
    """`driftbench serve` on a port it binds itself and reports in a file; its URL once
    /healthz answers. A server that exits or stays silent fails with its log's tail."""
    port_file, log_path = data_dir / "server.port", data_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(DRIFTBENCH),
                "serve",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--log-level",
                "warning",
            ],
            env=dict(env),
            cwd=data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            url: str | None = None
            while True:
                if process.poll() is not None:
                    pytest.fail(
                        f"server exited with status {process.returncode}:\n{log_tail(log_path)}"
                    )
                if url is None and port_file.exists():
                    url = f"http://127.0.0.1:{int(port_file.read_text())}"
                if url is not None and answers_healthz(url):
                    break
                if time.monotonic() >= deadline:
                    awaited = f"answer {url}/healthz" if url else f"write {port_file}"
                    pytest.fail(
                        f"server did not {awaited} within {SERVER_START_TIMEOUT_S} s:\n"
                        f"{log_tail(log_path)}"
                    )
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def check_schema_is_at_0003(engine: sa.Engine) -> None:
    """The starting point really is 0003: otherwise the upgrade below would prove nothing."""
    with engine.connect() as connection:
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert [tuple(v) for v in versions] == [(OLD_REVISION,)]
    columns = {column["name"] for column in sa.inspect(engine).get_columns("backend_runs")}
    assert "outputs_expired_at" not in columns
    assert "outputs_path" in columns


def check_api_reads_old_data(url: str) -> None:
    """The upgraded rows through the current service, with the token made before it."""
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        # Tokens are really required, so the 200s below prove the old read token is valid.
        assert client.get(f"/api/runs/{RUN_ID}").status_code == 401
        revoked = client.get(
            f"/api/runs/{RUN_ID}", headers={"Authorization": f"Bearer {REVOKED_WRITE_TOKEN}"}
        )
        assert revoked.status_code == 401, revoked.text

        answer = client.get(f"/api/runs/{RUN_ID}", headers=read)
        assert answer.status_code == 200, answer.text
        run = answer.json()
        assert run["id"] == RUN_ID
        assert run["status"] == "done"
        for field in ("model_id", "input_set_id", "reference", "modes", "repeats", "attempts"):
            assert run[field] == RUN[field], field
        assert run["error"] is None
        assert parse_time(run["created_at"]) == CREATED
        assert parse_time(run["finished_at"]) == FINISHED
        assert [b["backend"] for b in run["backend_runs"]] == ["numpy-f64", "keras-cpu"]
        for served_backend, stored in zip(run["backend_runs"], BACKEND_RUNS, strict=True):
            for field in ("status", "attempts", "environment", "timings", "deterministic"):
                assert served_backend[field] == stored[field], (stored["backend"], field)
            assert served_backend["repeat_spread"] == stored["repeat_spread"]
            assert parse_time(served_backend["started_at"]) == STARTED
            assert parse_time(served_backend["finished_at"]) == FINISHED
            assert served_backend["outputs_expired_at"] is None

        answer = client.get(f"/api/runs/{RUN_ID}/divergence?against=numpy-f64", headers=read)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["run_id"], body["against"], body["mode"]) == (
            RUN_ID,
            "numpy-f64",
            "accumulated",
        )
        assert [row["layer"] for row in body["rows"]] == ["input_layer", "dense", "dense_1"]
        assert [row["rel_l2"] for row in body["rows"]] == [0.0, 3.25e-08, 0.4375]
        assert [row["verdict"] for row in body["rows"]] == ["identical", "rounding", "mismatch"]
        assert body["rows"][0]["sqnr_db"] == "inf"
        for served_row, stored in zip(body["rows"], DIVERGENCES, strict=True):
            expected = {
                column: json_value(value)
                for column, value in stored.items()
                if column not in ("id", "run_id", "model_id", "architecture")
            }
            assert {column: served_row[column] for column in expected} == expected
        # dense_1 is the first layer worse than rounding: the verdicts are read, not recomputed.
        assert body["drift_start"] == {
            "keras-cpu": {
                "layer": "dense_1",
                "depth": 2,
                "verdict": "mismatch",
                "explained_by": None,
            }
        }
        # Rows stored before diagnosis existed say they were not diagnosed.
        assert {row["local_verdict"] for row in body["rows"]} == {None}
        assert {str(row["diagnosis"]) for row in body["rows"]} == {"None"}

        # The scope survived too: the read token may not write.
        refused = client.post(
            "/api/runs",
            headers=read,
            json={
                "model_id": MODEL_ID,
                "input_set_id": INPUT_SET_ID,
                "backends": ["numpy-f64"],
            },
        )
        assert refused.status_code == 403, refused.text
        assert "'read' token" in refused.json()["detail"]


def test_upgrade_from_0003_keeps_every_row_and_serves_it(
    database_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    """0003 schema + data -> `driftbench db upgrade` -> the same rows -> served by the API."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = service_env(database_url, data_dir)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None and head != OLD_REVISION, "no migration after 0003 to upgrade across"

    create_schema_at(OLD_REVISION, env)
    check_schema_is_at_0003(engine)
    with engine.begin() as connection:
        for table, (_, rows) in TABLES.items():
            insert_rows(connection, table, rows)
    with engine.connect() as connection:
        before = snapshot(connection)
    assert {table: len(rows) for table, (_, rows) in before.items()} == {
        table: len(rows) for table, (_, rows) in TABLES.items()
    }

    run_command([str(DRIFTBENCH), "db", "upgrade"], env, "driftbench db upgrade")

    engine.dispose()  # the schema changed under any pooled connection
    with engine.connect() as connection:
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        after = snapshot(connection, {table: columns for table, (columns, _) in before.items()})
        expired = connection.execute(
            sa.text('SELECT "id", "outputs_expired_at" FROM "backend_runs" ORDER BY "id"')
        ).all()
    assert [tuple(v) for v in versions] == [(head,)]
    for table, (columns, rows) in before.items():
        after_columns, after_rows = after[table]
        assert after_columns == columns, table
        assert after_rows == rows, f"rows of {table} changed in the upgrade"
    assert [tuple(row) for row in expired] == [(b["id"], None) for b in BACKEND_RUNS]

    # The raw comparison cannot tell a value from its stored form; the typed one can.
    typed = typed_rows(engine)
    for table, (_, inserted) in TABLES.items():
        stored = [{column: row[column] for column in inserted[0]} for row in typed[table]]
        assert stored == inserted, table

    with served(service_env(database_url, data_dir, auth="required"), data_dir) as url:
        check_api_reads_old_data(url)
