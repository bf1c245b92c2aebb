"""Alembic environment: runs on the connection handed over by ``resayil_gateway.store.migrate``."""

from alembic import context

from resayil_gateway.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `resayil db upgrade`, which provides the connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
