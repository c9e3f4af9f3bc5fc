"""Alembic environment: migrations run on the connection chatledger hands over, one chain
for SQLite and PostgreSQL. Migrations never import the app's models, so an old migration
keeps meaning what it meant when it was written."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through chatledger (chatledger db upgrade)")

context.configure(
    connection=connection,
    target_metadata=None,
    # SQLite cannot ALTER most things; batch mode recreates the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)

with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Two processes opening one database at once must not both migrate it.
        connection.execute(text("SELECT pg_advisory_xact_lock(7204151123)"))
    context.run_migrations()
