"""Request and response schemas, a family per resource (Create / Public / list with count).

JSON has no Infinity: float metrics that can be infinite (sqnr_db for identical
outputs) are sent as the strings "inf" / "-inf", and the schema says so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from app.data.divergences import ROW_KEY
from app.data.orm import LayerDivergence
from workers.engine.metrics import AGGREGATE_METRICS, METRIC_FIELDS
from workers.engine.status import BackendStatus, RunStatus

# The metrics an aggregate query can summarise: every per-layer number but the counts.
Metric = StrEnum("Metric", {name: name for name in AGGREGATE_METRICS})
ModeName = Literal["accumulated", "isolated"]
MAX_ROW_ID = 2**63 - 1
DbId = Annotated[int, Field(ge=0, le=MAX_ROW_ID)]
FloatOrInf = float | Literal["inf", "-inf", "nan"]


def _as_utc(value: datetime) -> datetime:
    """SQLite drops the zone of the UTC times we store; put it back so every answer is
    RFC 3339 with an explicit offset, whichever database served it."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


class LayerPublic(BaseModel):
    """One node of the unrolled model: a nested layer named by its path ('base/conv'), a
    repeated call 'dense@2', an operation of class 'ops.<Name>'; `inbound` names the
    nodes feeding it, `dtype` is given for inputs (int32 for token ids)."""

    name: str
    class_name: str
    output_shape: list[int | None]
    params: int
    depth: int
    inbound: list[str] = []
    dtype: str | None = None


class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sha256: str
    name: str
    tags: list[str]
    file_format: str
    size_bytes: int
    architecture: str
    architecture_label: str
    layers: list[LayerPublic]
    backend_support: dict[str, str | None] = Field(
        description="Per backend: null when it can run the model, else the layer that stops it."
    )
    created_at: UtcDateTime


class ModelsPublic(BaseModel):
    count: int
    data: list[ModelPublic]


class InputGenerate(BaseModel):
    """Generated inputs, seeded: `ones`, `uniform(low, high)`, `normal(mean, std)`, or
    `randint(low, high)` (integers in [low, high), e.g. token ids for an Embedding)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["ones", "uniform", "normal", "randint"]
    batch: Annotated[int, Field(ge=1)] = 1
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    low: float = -1.0
    high: float = 1.0
    mean: float = 0.0
    std: Annotated[float, Field(ge=0)] = 1.0


class InputSetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    model_id: int
    kind: str
    params: dict[str, Any]
    shapes: dict[str, list[int]]
    nonfinite: int
    sha256: str
    created_at: UtcDateTime


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: DbId
    input_set_id: DbId
    backends: list[str] | None = Field(
        default=None, description="Default: every backend available on this server."
    )
    reference: str = "numpy-f64"
    modes: list[ModeName] = Field(default_factory=lambda: ["accumulated"], min_length=1)
    repeats: Annotated[int, Field(ge=1)] = 1
    compare_against: list[str] | None = Field(
        default=None,
        description="Backends to compare every other backend with besides the reference, "
        "as part of the run. Default: keras-cpu when the run has it (the browser vs Python "
        "view); others later with POST /api/runs/{id}/comparisons.",
    )


class ComparisonCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    against: str = Field(description="The backend every other finished backend is compared with")


class ComparisonPublic(BaseModel):
    run_id: int
    against: str


class ComparisonsPublic(BaseModel):
    run_id: int
    against: list[str] = Field(description="Backends the run's rows are stored against")


class BackendRunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    backend: str
    status: BackendStatus
    attempts: int
    reason: str | None
    environment: dict[str, Any]
    timings: dict[str, float]
    deterministic: bool | None
    repeat_spread: float | None
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    outputs_expired_at: UtcDateTime | None = Field(
        description="When its layer outputs were deleted (DRIFTBENCH_OUTPUT_RETENTION_DAYS); "
        "its metrics remain, tensor downloads answer 410."
    )


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    model_id: int
    input_set_id: int
    reference: str
    modes: list[str]
    repeats: int
    compare_against: Annotated[list[str], BeforeValidator(lambda value: value or [])]
    status: RunStatus = Field(
        description="`finalizing`: every backend finished, the comparison is being stored"
    )
    attempts: int
    error: str | None
    created_at: UtcDateTime
    finished_at: UtcDateTime | None
    backend_runs: list[BackendRunPublic]


class RunsPublic(BaseModel):
    count: int
    data: list[RunPublic]


DivergenceKey = create_model(
    "DivergenceKey",
    **{  # type: ignore[call-overload]
        name: (LayerDivergence.__table__.c[name].type.python_type, ...) for name in ROW_KEY
    },
)


def _metric_type(metric: Any) -> Any:
    kind = str(metric.type)
    if metric.metadata["unbounded"]:
        return FloatOrInf
    base: Any = int if kind.startswith("int") else float
    return base | None if "None" in kind else base


class ExplanationPublic(BaseModel):
    hypothesis: str = Field(description="A stable cause id, e.g. kernel-transposed")
    rel_l2: FloatOrInf = Field(
        description="The candidate against the layer recomputed with the cause applied"
    )
    explains: bool = Field(
        description="The candidate matches the layer with the cause within rounding (or "
        "within the cause's own precision)"
    )
    variant: str | None = Field(description="Which form of the cause fitted best")


class Diagnosis(BaseModel):
    local_rel_l2: FloatOrInf | None = Field(
        description="The layer's own error: the candidate against the layer recomputed in "
        "float64 from the candidate's own inputs"
    )
    local_bound: FloatOrInf | None = Field(
        description="The local rel_l2 float rounding can produce for this layer"
    )
    local_verdict: str | None = Field(
        description="identical, rounding (within local_bound), reduced-precision or "
        "mismatch (by the rel_l2 thresholds), nonfinite; null when not diagnosed"
    )
    precision_bound: FloatOrInf | None = Field(
        description="The local rel_l2 the backend's nominal precision (float16, tf32, "
        "int8) allows; the row's verdict is reduced-precision within it, mismatch beyond. "
        "Null for float32 and float64 backends"
    )
    diagnosis: list[ExplanationPublic] | None = Field(
        description="Causes tested on a layer worse than rounding, best first; [] when "
        "none was needed or none applies; null when not diagnosed"
    )
    explained_by: str | None = Field(
        description="The best explaining cause, 'unexplained', or null"
    )


# One row of a divergence table: where it is, then every metric of workers/engine/metrics.py
# `Divergence` in the record's own order, the histogram, the verdict and the diagnosis.
DivergenceRow = create_model(
    "DivergenceRow",
    __base__=DivergenceKey,
    **{metric.name: (_metric_type(metric), ...) for metric in METRIC_FIELDS},  # type: ignore[call-overload]
    histogram=(dict[str, list[float]], ...),
    verdict=(str, ...),
    **{name: (info.annotation, info) for name, info in Diagnosis.model_fields.items()},
)


class DriftStart(BaseModel):
    layer: str
    depth: int
    verdict: str
    explained_by: str | None = Field(description="Its diagnosis: the best explaining cause")


class DivergencePublic(BaseModel):
    run_id: int
    against: str
    mode: str
    drift_start: dict[str, DriftStart | None] = Field(
        description="Per backend: the first layer worse than rounding, or null."
    )
    not_provided: dict[str, list[str]] = Field(
        description="Per backend: the layers it has no output for (none compared), in order."
    )
    rows: list[DivergenceRow]


class DriftStats(BaseModel):
    count: int
    mean: FloatOrInf | None
    median: FloatOrInf | None
    p95: FloatOrInf | None
    max: FloatOrInf | None


class LayerDriftRow(DriftStats):
    layer: str
    class_name: str
    depth: int


class ModelDriftPublic(BaseModel):
    model_id: int
    backend: str
    against: str
    mode: str
    metric: str
    layers: list[LayerDriftRow]


class DepthDriftRow(DriftStats):
    depth: int
    growth: FloatOrInf | None = Field(
        description="Mean over runs of metric(depth) / metric(depth - 1); null at depth 1."
    )


class DepthDriftPublic(BaseModel):
    architecture: str
    backend: str
    against: str
    mode: str
    metric: str
    models: int
    depths: list[DepthDriftRow]


class BackendPublic(BaseModel):
    id: str
    queue: str
    precision: str = Field(
        description="The arithmetic the backend is meant to do (float64, float32, tf32, "
        "float16, int8): its layers are judged against it"
    )
    by_default: bool = Field(description="Whether a run that names no backends runs it")
    available: bool
    reason: str | None
    versions: dict[str, str]


class BackendsPublic(BaseModel):
    count: int
    data: list[BackendPublic]


class ErrorPublic(BaseModel):
    """Every error answer: `detail` is a message naming the problem, or FastAPI's list of
    field errors when a request does not match its schema."""

    detail: str | list[dict[str, Any]]


class ExternalPublic(BaseModel):
    run_id: int
    backend: str = Field(description="ext:<name>")
    status: BackendStatus
    environment: dict[str, Any] = Field(
        description="What was uploaded: modes and layers, dtypes, the note (and a probe's "
        "device record)"
    )
    against: str = Field(description="The run's reference, which the summary is against")
    mode: str
    compared_layers: int
    drift_start: DriftStart | None
    not_provided: list[str] = Field(description="Layers of the model the upload lacks")


class ProbePublic(BaseModel):
    run_id: int
    path: str = Field(description="/probe/<token>: open it in the browser to measure")
    url: str
    expires_at: UtcDateTime
    qr_svg: str = Field(description="The url as a QR code, inline SVG")
