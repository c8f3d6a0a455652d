"""External backends ('ext:<name>', 'ext:probe/<device>/<backend>') need longer backend
names; probe links carry single-run tokens, stored hashed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDENED = {"backend_runs": ("backend",), "layer_divergences": ("backend", "against")}


def _resize(length_from: int, length_to: int) -> None:
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(
                    column,
                    existing_type=sa.String(length=length_from),
                    type_=sa.String(length=length_to),
                    existing_nullable=False,
                )


def upgrade() -> None:
    _resize(32, 120)
    op.create_table(
        "probe_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_probe_tokens_run_id", "probe_tokens", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_probe_tokens_run_id", table_name="probe_tokens")
    op.drop_table("probe_tokens")
    _resize(120, 32)
