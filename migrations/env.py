"""Alembic environment: the database URL comes from driftbench's settings."""

from alembic import context

from app.core.db import engine
from app.data.orm import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    with engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
