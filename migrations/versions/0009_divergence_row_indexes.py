"""The drift aggregates fold in a scope's rows after the last id they saw, so the
divergence table is indexed by (scope, backend, against, mode, id) instead of by depth.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 19:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "layer_divergences"
BY_DEPTH = {
    "ix_divergence_model": ["model_id", "backend", "against", "mode", "depth"],
    "ix_divergence_architecture": ["architecture", "backend", "against", "mode", "depth"],
}
BY_ID = {
    "ix_divergence_model_rows": ["model_id", "backend", "against", "mode", "id"],
    "ix_divergence_architecture_rows": ["architecture", "backend", "against", "mode", "id"],
}


def _replace(old: dict[str, list[str]], new: dict[str, list[str]]) -> None:
    for name in old:
        op.drop_index(name, table_name=TABLE)
    for name, columns in new.items():
        op.create_index(name, TABLE, columns)


def upgrade() -> None:
    _replace(BY_DEPTH, BY_ID)


def downgrade() -> None:
    _replace(BY_ID, BY_DEPTH)
