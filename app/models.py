"""The ORM: what the service stores. Files live in the data directory; rows hold metadata.

`LayerDivergence` repeats the model id and architecture of its run so the drift
aggregates are single-table, index-backed SQL queries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    file_format: Mapped[str] = mapped_column(String(8))
    size_bytes: Mapped[int] = mapped_column(Integer)
    architecture: Mapped[str] = mapped_column(String(16), index=True)
    architecture_label: Mapped[str] = mapped_column(Text)
    layers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    backend_support: Mapped[dict[str, str | None]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    input_sets: Mapped[list[InputSet]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True
    )
    runs: Mapped[list[Run]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True
    )


class InputSet(Base):
    __tablename__ = "input_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    shapes: Mapped[dict[str, list[int]]] = mapped_column(JSON)
    nonfinite: Mapped[int] = mapped_column(Integer, default=0)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model: Mapped[Model] = relationship(back_populates="input_sets")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    input_set_id: Mapped[int] = mapped_column(
        ForeignKey("input_sets.id", ondelete="CASCADE"), index=True
    )
    reference: Mapped[str] = mapped_column(String(32))
    modes: Mapped[list[str]] = mapped_column(JSON)
    repeats: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    model: Mapped[Model] = relationship(back_populates="runs")
    backend_runs: Mapped[list[BackendRun]] = relationship(
        back_populates="run",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="BackendRun.id",
    )


class BackendRun(Base):
    __tablename__ = "backend_runs"
    __table_args__ = (UniqueConstraint("run_id", "backend"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    backend: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    environment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    deterministic: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    repeat_spread: Mapped[float | None] = mapped_column(Float, nullable=True)
    outputs_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # When the retention sweep deleted the outputs file (outputs_path is then NULL).
    outputs_expired_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    run: Mapped[Run] = relationship(back_populates="backend_runs")


AGGREGATE_METRICS = (
    "n_diff",
    "frac_diff",
    "max_abs",
    "mean_abs",
    "rmse",
    "rel_l2",
    "max_rel",
    "max_ulp",
    "median_ulp",
    "cosine",
    "sqnr_db",
    "p50_abs",
    "p90_abs",
    "p99_abs",
    "argmax_agree",
)
METRIC_COLUMNS = (
    "n",
    *AGGREGATE_METRICS,
    "nonfinite_candidate",
    "nonfinite_reference",
    "nonfinite_mismatch",
)


class LayerDivergence(Base):
    __tablename__ = "layer_divergences"
    __table_args__ = (
        UniqueConstraint("run_id", "backend", "against", "mode", "layer"),
        Index("ix_divergence_model", "model_id", "backend", "against", "mode", "depth"),
        Index("ix_divergence_architecture", "architecture", "backend", "against", "mode", "depth"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    architecture: Mapped[str] = mapped_column(String(16))
    backend: Mapped[str] = mapped_column(String(32))
    against: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    layer: Mapped[str] = mapped_column(String(200))
    class_name: Mapped[str] = mapped_column(String(64))
    depth: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    n_diff: Mapped[int] = mapped_column(Integer)
    frac_diff: Mapped[float] = mapped_column(Float)
    max_abs: Mapped[float] = mapped_column(Float)
    mean_abs: Mapped[float] = mapped_column(Float)
    rmse: Mapped[float] = mapped_column(Float)
    rel_l2: Mapped[float] = mapped_column(Float)
    max_rel: Mapped[float] = mapped_column(Float)
    max_ulp: Mapped[int] = mapped_column(BigInteger)
    median_ulp: Mapped[float] = mapped_column(Float)
    cosine: Mapped[float] = mapped_column(Float)
    sqnr_db: Mapped[float] = mapped_column(Float)
    p50_abs: Mapped[float] = mapped_column(Float)
    p90_abs: Mapped[float] = mapped_column(Float)
    p99_abs: Mapped[float] = mapped_column(Float)
    argmax_agree: Mapped[float | None] = mapped_column(Float, nullable=True)
    nonfinite_candidate: Mapped[int] = mapped_column(Integer)
    nonfinite_reference: Mapped[int] = mapped_column(Integer)
    nonfinite_mismatch: Mapped[int] = mapped_column(Integer)
    histogram: Mapped[dict[str, list[float]]] = mapped_column(JSON)
    verdict: Mapped[str] = mapped_column(String(20))


class ApiToken(Base):
    """An API token: only its SHA-256 is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DriftVersion(Base):
    """How often the divergence rows under one scope ('model:<id>', 'architecture:<sig>')
    have changed; a cached aggregate is valid while its scope's version is unchanged."""

    __tablename__ = "drift_versions"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class DriftAggregate(Base):
    """One aggregate drift answer, computed at `version` of its scope."""

    __tablename__ = "drift_aggregates"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    result: Mapped[Any] = mapped_column(JSON)
