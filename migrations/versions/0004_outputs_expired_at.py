"""When a backend run's stored layer outputs were deleted by the retention sweep.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backend_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("outputs_expired_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("backend_runs", schema=None) as batch_op:
        batch_op.drop_column("outputs_expired_at")
