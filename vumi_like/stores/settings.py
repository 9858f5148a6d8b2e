"""``StoreSettings``: the config keys of a worker that uses the message store."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from vumi_like.stores.database import database_url
from vumi_like.stores.errors import StoreError
from vumi_like.stores.store import MessageStore

__all__ = ["DEFAULT_STORE_URL", "StoreSettings"]

# A SQLite file in the current folder: a laptop or a demo needs no database server.
DEFAULT_STORE_URL = "sqlite:///vumi_like.db"


class StoreSettings(BaseModel):
    """Inherited by a worker's config class beside ``BaseConfig``; checked at load time."""

    store_url: str = Field(
        default=DEFAULT_STORE_URL,
        description="sqlite:///path/file.db, or postgresql://user:password@host:port/db",
    )
    store_max_threads: int = Field(
        default=8, ge=1, description="Store queries run at once (threads, and connections)"
    )
    store_statement_timeout: float = Field(
        default=5, gt=0, description="Seconds any store query or lock wait may take"
    )
    store_schema: str | None = Field(
        default=None, description="PostgreSQL: the schema holding the tables (created if missing)"
    )

    @field_validator("store_url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        try:
            database_url(url)
        except StoreError as exc:
            raise ValueError(str(exc)) from None
        return url

    def make_store(self) -> MessageStore:
        """The configured store, not yet open (``await store.open()`` connects and migrates)."""
        return MessageStore(
            self.store_url,
            max_threads=self.store_max_threads,
            statement_timeout=self.store_statement_timeout,
            schema=self.store_schema,
        )
