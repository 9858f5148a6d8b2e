"""What the message store raises. Callers catch ``StoreError``; the rest say why."""

from __future__ import annotations

from vumi_like.retry import ServiceUnavailable

__all__ = ["AlreadyExists", "ClaimLost", "InvalidCursor", "StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """The store could not do what was asked: a misuse, or data the database refused."""


class StoreUnavailable(StoreError, ServiceUnavailable):
    """The database cannot be reached, or did not answer within the statement timeout.

    Worth retrying later (a handler raising it has its delivery retried); the message
    names the database (without its password).
    """


class AlreadyExists(StoreError):
    """A row with this id exists already (a message, a batch, an OAuth2 client...)."""


class InvalidCursor(StoreError):
    """A page cursor that this store did not hand out (or not for this listing)."""


class ClaimLost(StoreError):
    """An idempotency key's claim was taken over by another run: its answer is not kept."""
