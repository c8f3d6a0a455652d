"""All settings in one place, read from `DRIFTBENCH_*` environment variables.

The service, its job processes, Celery workers and Alembic read the same `settings`
object, so a threshold or a path never has two sources of truth. The engine never
reads it: it gets the part it needs as an `EngineOptions` (`engine_options()`).
"""

import contextlib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.engine.metrics import VerdictThresholds
from workers.engine.options import EngineOptions

MiB = 1024 * 1024


CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def half_of_physical_memory() -> int:
    """Half of what this machine, or the container it runs in (its cgroup's limit),
    has: a job that takes more is stopped before the kernel's OOM killer acts."""
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file in CGROUP_MEMORY_LIMITS:
        with contextlib.suppress(OSError, ValueError):
            memory = min(memory, int(Path(limit_file).read_text()))
    return memory // 2


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTBENCH_")

    data_dir: Path = Field(
        default=Path("driftbench-data"),
        description="Where example models and (later) stored results live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default SQLite at <data_dir>/driftbench.db.",
    )
    db_startup_timeout_s: float = Field(
        default=60.0,
        ge=0,
        description="How long `serve` retries an unreachable database before it gives up.",
    )
    executor: Literal["local", "celery"] = Field(
        default="local",
        description="'local': jobs run in job processes the server supervises; 'celery': "
        "on `driftbench worker` processes through the broker.",
    )
    broker_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Celery broker (Redis) for DRIFTBENCH_EXECUTOR=celery.",
    )
    broker_visibility_timeout_s: int = Field(
        default=1800,
        ge=1,
        description="A job held by a worker that died is re-delivered after this long; "
        "keep it above DRIFTBENCH_BACKEND_TIME_LIMIT_S plus a job process's start (a minute).",
    )
    backend_time_limit_s: int = Field(
        default=900,
        ge=1,
        description="Time limit of one job (a backend, or a run's comparison) in its job "
        "process, in both executors; over it the process is stopped and the backend failed.",
    )
    job_memory_limit_bytes: int = Field(
        default_factory=half_of_physical_memory,
        ge=64 * MiB,
        description="Most resident memory a job process (with its children, e.g. Chromium) "
        "may use, a page they share counted once; over it the process is stopped and the "
        "backend failed. Default: half of this machine's memory.",
    )
    worker_heartbeat_s: float = Field(
        default=10.0, gt=0, description="How often a Celery worker re-announces its backends."
    )
    local_workers: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Runs the embedded executor works on at once; each capability (cpu, "
        "browser, gpu) keeps up to this many warm job processes.",
    )
    cpu_job_nice: int = Field(
        default=19,
        ge=0,
        le=19,
        description="How much lower than their parent the CPU's job processes run (nice): "
        "where they share the cores with the browser's, a run's longest lane, its jobs go first.",
    )
    host: str = Field(default="127.0.0.1", description="Address `driftbench serve` binds.")
    port: int = Field(default=8000, ge=0, le=65535)
    auth: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="API tokens: 'auto' requires them when the server binds beyond loopback.",
    )
    max_upload_bytes: int = Field(default=512 * MiB, ge=1, description="Largest upload (413).")
    max_input_bytes: int = Field(
        default=1024 * MiB,
        ge=1,
        description="Largest input set, uploaded (as unpacked) or generated.",
    )
    max_unpacked_bytes: int = Field(
        default=2048 * MiB,
        ge=1,
        description="Largest total a .keras zip may declare it unpacks to (zip bombs).",
    )
    max_model_params: int = Field(
        default=250_000_000,
        ge=1,
        description="Most parameters a model's config may declare; counted before allocation.",
    )
    max_stored_output_bytes: int = Field(
        default=256 * MiB,
        ge=1,
        description="Most layer outputs stored per backend run; over it, the first samples.",
    )
    output_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Delete the stored layer outputs of runs finished more than this many "
        "days ago (their metrics and divergence rows stay); unset: keep them forever.",
    )
    inspect_timeout_s: float = Field(
        default=120.0, gt=0, description="Time limit for parsing an uploaded model file."
    )
    probe_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long a probe link (POST /api/runs/{id}/probe) accepts a device's outputs.",
    )
    diagnosis_budget_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a run's diagnosis (each layer's local error, the hypotheses on "
        "layers worse than rounding) may take; layers past it are left undiagnosed. 0: off.",
    )
    max_batch: int = Field(default=4096, ge=1, description="Largest generated input batch.")
    max_repeats: int = Field(default=10, ge=1, description="Largest `repeats` of a run.")
    job_attempts: int = Field(
        default=2, ge=1, description="Tries of a run interrupted by a server stop."
    )
    verdict_rounding_rel_l2: float = Field(
        default=1e-5,
        gt=0,
        description="Largest rel_l2 still called float32 rounding.",
    )
    verdict_reduced_precision_rel_l2: float = Field(
        default=1e-2,
        gt=0,
        description="Largest rel_l2 called reduced precision (TF32, float16); above is a mismatch.",
    )
    histogram_bins: int = Field(default=41, ge=3, le=1001)
    keras_batch_size: int = Field(default=256, ge=1)
    onednn: Literal["default", "on", "off"] = Field(
        default="default",
        description="TF_ENABLE_ONEDNN_OPTS for keras-cpu; 'default' leaves TensorFlow's choice.",
    )
    chromium_path: Path = Field(
        default=Path("/usr/bin/chromium"),
        description="The Chromium the TF.js backends drive (Debian's `chromium` package).",
    )
    browser_job_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Time limit of one TF.js job in the page; a hang restarts the browser.",
    )
    c_compiler: str = Field(
        default="cc",
        pattern=r"^[A-Za-z0-9_./+-]+$",
        description="The C compiler of the c and c-fastmath backends (a name on PATH or a path).",
    )
    c_compile_timeout_s: float = Field(
        default=300.0, gt=0, description="Time limit of compiling one model's C port."
    )
    c_run_timeout_s: float = Field(
        default=240.0,
        gt=0,
        description="Time limit of one run of a compiled C port (a job runs it once per mode "
        "and repeat, within DRIFTBENCH_BACKEND_TIME_LIMIT_S).",
    )
    gpu_framework: Literal["auto", "tensorflow", "jax", "torch"] = Field(
        default="auto",
        description="Keras backend of keras-gpu; 'auto': the first installed one that sees a GPU.",
    )
    gpu_allow_cpu_for_tests: bool = Field(
        default=False,
        description="Test-only: let keras-gpu run on the CPU when no GPU is visible.",
    )
    test_job_gate_dir: Path | None = Field(
        default=None,
        description="Test-only: each backend job announces its process here and waits for a "
        "release file, so a test can crash it provably mid-job.",
    )
    tfjs_batch_size: int = Field(default=256, ge=1, description="batchSize of TF.js predict.")

    def verdict_thresholds(self) -> VerdictThresholds:
        return VerdictThresholds(
            rounding=self.verdict_rounding_rel_l2,
            reduced_precision=self.verdict_reduced_precision_rel_l2,
        )

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            thresholds=self.verdict_thresholds(),
            histogram_bins=self.histogram_bins,
            max_unpacked_bytes=self.max_unpacked_bytes,
            max_model_params=self.max_model_params,
            onednn=self.onednn,
            keras_batch_size=self.keras_batch_size,
            tfjs_batch_size=self.tfjs_batch_size,
            chromium_path=self.chromium_path,
            browser_job_timeout_s=self.browser_job_timeout_s,
            backend_time_limit_s=self.backend_time_limit_s,
            c_compiler=self.c_compiler,
            c_compile_timeout_s=self.c_compile_timeout_s,
            c_run_timeout_s=self.c_run_timeout_s,
            gpu_framework=self.gpu_framework,
            gpu_allow_cpu_for_tests=self.gpu_allow_cpu_for_tests,
            diagnosis_budget_s=self.diagnosis_budget_s,
        )

    @property
    def auth_required(self) -> bool:
        loopback = self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")
        return self.auth == "required" or (self.auth == "auto" and not loopback)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'driftbench.db'}"


settings = Settings()
