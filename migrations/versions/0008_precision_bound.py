"""Each divergence row of a backend of reduced nominal precision (float16, TF32, int8)
carries the local rel_l2 that precision allows; rows stored before have none.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("layer_divergences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("precision_bound", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("layer_divergences", schema=None) as batch_op:
        batch_op.drop_column("precision_bound")
