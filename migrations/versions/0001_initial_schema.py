"""Initial schema: models, input sets, runs, backend runs, layer divergences.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 22:32:44.686067
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("file_format", sa.String(length=8), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("architecture", sa.String(length=16), nullable=False),
        sa.Column("architecture_label", sa.Text(), nullable=False),
        sa.Column("layers", sa.JSON(), nullable=False),
        sa.Column("backend_support", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_models_architecture"), ["architecture"], unique=False)

    op.create_table(
        "input_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("shapes", sa.JSON(), nullable=False),
        sa.Column("nonfinite", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("input_sets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_input_sets_model_id"), ["model_id"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("input_set_id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("modes", sa.JSON(), nullable=False),
        sa.Column("repeats", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["input_set_id"], ["input_sets.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_input_set_id"), ["input_set_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_status"), ["status"], unique=False)

    op.create_table(
        "backend_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("deterministic", sa.Boolean(), nullable=True),
        sa.Column("repeat_spread", sa.Float(), nullable=True),
        sa.Column("outputs_path", sa.String(length=500), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "backend"),
    )
    with op.batch_alter_table("backend_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backend_runs_run_id"), ["run_id"], unique=False)

    op.create_table(
        "layer_divergences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("architecture", sa.String(length=16), nullable=False),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("against", sa.String(length=32), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("layer", sa.String(length=200), nullable=False),
        sa.Column("class_name", sa.String(length=64), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("n_diff", sa.Integer(), nullable=False),
        sa.Column("frac_diff", sa.Float(), nullable=False),
        sa.Column("max_abs", sa.Float(), nullable=False),
        sa.Column("mean_abs", sa.Float(), nullable=False),
        sa.Column("rmse", sa.Float(), nullable=False),
        sa.Column("rel_l2", sa.Float(), nullable=False),
        sa.Column("max_rel", sa.Float(), nullable=False),
        sa.Column("max_ulp", sa.BigInteger(), nullable=False),
        sa.Column("median_ulp", sa.Float(), nullable=False),
        sa.Column("cosine", sa.Float(), nullable=False),
        sa.Column("sqnr_db", sa.Float(), nullable=False),
        sa.Column("p50_abs", sa.Float(), nullable=False),
        sa.Column("p90_abs", sa.Float(), nullable=False),
        sa.Column("p99_abs", sa.Float(), nullable=False),
        sa.Column("argmax_agree", sa.Float(), nullable=True),
        sa.Column("nonfinite_candidate", sa.Integer(), nullable=False),
        sa.Column("nonfinite_reference", sa.Integer(), nullable=False),
        sa.Column("nonfinite_mismatch", sa.Integer(), nullable=False),
        sa.Column("histogram", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "backend", "against", "mode", "layer"),
    )
    with op.batch_alter_table("layer_divergences", schema=None) as batch_op:
        batch_op.create_index(
            "ix_divergence_architecture",
            ["architecture", "backend", "against", "mode", "depth"],
            unique=False,
        )
        batch_op.create_index(
            "ix_divergence_model", ["model_id", "backend", "against", "mode", "depth"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("layer_divergences", schema=None) as batch_op:
        batch_op.drop_index("ix_divergence_model")
        batch_op.drop_index("ix_divergence_architecture")

    op.drop_table("layer_divergences")
    with op.batch_alter_table("backend_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backend_runs_run_id"))

    op.drop_table("backend_runs")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_status"))
        batch_op.drop_index(batch_op.f("ix_runs_model_id"))
        batch_op.drop_index(batch_op.f("ix_runs_input_set_id"))

    op.drop_table("runs")
    with op.batch_alter_table("input_sets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_input_sets_model_id"))

    op.drop_table("input_sets")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_models_architecture"))

    op.drop_table("models")
