"""Alembic's environment for the message store: always given a connection, never a URL.

``vumi_like.stores.migrate`` builds Alembic's ``Config`` in code and passes an open
connection (inside its transaction) as ``config.attributes["connection"]``. There is
no alembic.ini and no offline (SQL script) mode: the store migrates the database it
is about to use, with the same URL handling and timeouts.

To write a new version, add ``versions/NNNN_what.py`` by hand, modelled on the last one,
and change ``schema.py`` to match; ``tests/stores/test_migrations.py`` fails until the
two agree on both databases.
"""

from __future__ import annotations

from alembic import context

from vumi_like.stores.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through vumi_like.stores.migrate, which passes a connection"
    )

context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
