"""Alembic's environment and the store's schema versions (run by ``stores.migrate``)."""
