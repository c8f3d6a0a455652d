"""The ORM: what the service stores. Files live in the data directory; rows hold metadata.

`LayerDivergence` repeats the model id and architecture of its run so the drift
aggregates are single-table, index-backed SQL queries.
"""

from __future__ import annotations

from dataclasses import Field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from workers.engine.metrics import METRIC_FIELDS
from workers.engine.status import BackendStatus, RunStatus

# 'ext:probe/<device>/<backend>' and other external names (migration 0006).
BACKEND_NAME_LENGTH = 120


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


def status_column(vocabulary: type[StrEnum]) -> Enum:
    """A status stored as its plain string (VARCHAR(16), as migration 0001 made it) and
    read back as the engine's enum; no database enum type, so no migration."""
    return Enum(
        vocabulary,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class StoredModel(Base):
    """An uploaded Keras model file (by sha256) and what parsing it found."""

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

    model: Mapped[StoredModel] = relationship(back_populates="input_sets")


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
    # Backends every other backend is compared with besides the reference, in the run's
    # comparison step; NULL for runs stored before migration 0005 (none).
    compare_against: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[RunStatus] = mapped_column(
        status_column(RunStatus), default=RunStatus.QUEUED, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    model: Mapped[StoredModel] = relationship(back_populates="runs")
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
    backend: Mapped[str] = mapped_column(String(BACKEND_NAME_LENGTH))
    status: Mapped[BackendStatus] = mapped_column(
        status_column(BackendStatus), default=BackendStatus.QUEUED
    )
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


def _metric_column(metric: Field[Any]) -> Column[Any]:
    """A metric's column, typed from its field in workers/engine/metrics.py `Divergence`."""
    kind = str(metric.type)
    if metric.metadata["wide"]:
        sql_type: Any = BigInteger
    elif kind.startswith("int"):
        sql_type = Integer
    else:
        sql_type = Float
    return Column(metric.name, sql_type, nullable="None" in kind)


class LayerDivergence(Base):
    """One layer of one backend compared with `against`, in one mode: every metric of
    `Divergence` as a column, so the drift aggregates are single-table SQL queries."""

    __table__ = Table(
        "layer_divergences",
        Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        Column("model_id", ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        Column("architecture", String(16), nullable=False),
        Column("backend", String(BACKEND_NAME_LENGTH), nullable=False),
        Column("against", String(BACKEND_NAME_LENGTH), nullable=False),
        Column("mode", String(16), nullable=False),
        Column("layer", String(200), nullable=False),
        Column("class_name", String(64), nullable=False),
        Column("depth", Integer, nullable=False),
        *(_metric_column(metric) for metric in METRIC_FIELDS),
        Column("histogram", JSON, nullable=False),
        Column("verdict", String(20), nullable=False),
        Column("local_rel_l2", Float, nullable=True),
        Column("local_bound", Float, nullable=True),
        Column("local_verdict", String(20), nullable=True),
        Column("precision_bound", Float, nullable=True),
        Column("explained_by", String(40), nullable=True),
        Column("diagnosis", JSON, nullable=True),
        UniqueConstraint("run_id", "backend", "against", "mode", "layer"),
        # The drift aggregates read a scope's rows after the last id they folded in.
        Index("ix_divergence_model_rows", "model_id", "backend", "against", "mode", "id"),
        Index(
            "ix_divergence_architecture_rows", "architecture", "backend", "against", "mode", "id"
        ),
    )


class ApiToken(Base):
    """An API token: only its SHA-256 is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(8))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProbeToken(Base):
    """A probe link's token: write-only for one run's external outputs until it expires;
    only its SHA-256 is stored."""

    __tablename__ = "probe_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DriftVersion(Base):
    """How often divergence rows under one scope ('model:<id>', 'architecture:<sig>') were
    removed or rewritten; its row is also the lock its writers insert under
    (app.data.drift_cache)."""

    __tablename__ = "drift_versions"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class DriftAggregate(Base):
    """One drift query's kept state (sketches and the last row id folded in), valid at
    `version` of its scope."""

    __tablename__ = "drift_aggregates"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    result: Mapped[Any] = mapped_column(JSON)
