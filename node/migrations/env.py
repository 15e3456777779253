"""Alembic's entry: always run on the connection node/migrations hands over (``yrd db
upgrade`` or ``yrd node init``), inside that connection's transaction; never from a URL in an
ini file, so there is one way in and the node's own checks run first."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
