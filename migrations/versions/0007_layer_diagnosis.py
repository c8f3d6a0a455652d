"""Each divergence row carries its diagnosis: the layer's local error, its rounding
bound and local verdict, the causes tested and the best explanation. Rows stored
before have none (null: not diagnosed).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("local_rel_l2", sa.Float()),
    ("local_bound", sa.Float()),
    ("local_verdict", sa.String(length=20)),
    ("explained_by", sa.String(length=40)),
    ("diagnosis", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("layer_divergences", schema=None) as batch_op:
        for name, kind in COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("layer_divergences", schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
