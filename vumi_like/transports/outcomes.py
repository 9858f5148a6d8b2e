"""What a provider call can end in, classified once for every transport.

A transport's provider code returns the provider's id(s) for what it sent, or raises
one of these; the transport base turns them into events:

* ``PermanentFailure``: the provider refused the message and would refuse it again
  (bad number, content rejected, 4xx other than 429): a ``nack`` with the reason.
* ``TemporaryFailure``: it may work later (timeout, connection error, 429, 5xx, SMPP
  throttling or queue full): a broker-held retry under the shared retry policy, a
  ``nack`` after the last attempt. ``retry_after`` is the provider's own hint, if any.
* ``ProviderUnavailable``: a ``TemporaryFailure`` meaning the connection to the
  provider is down; besides the retry, the transport stops taking outbound until the
  connection is back.
"""

from __future__ import annotations


class ProviderError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentFailure(ProviderError):
    """Refused for good: the message is nacked with ``reason``."""


class TemporaryFailure(ProviderError):
    """Worth trying again, after ``retry_after`` seconds if the provider said so."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ProviderUnavailable(TemporaryFailure):
    """The provider cannot be reached at all: stop taking outbound until it can."""


def classify_http_status(status: int, reason: str, *, retry_after: float | None = None) -> None:
    """Raise the failure an HTTP provider's non-2xx ``status`` means; return on 2xx."""
    if 200 <= status < 300:
        return
    if status == 429 or status >= 500 or status == 408:
        raise TemporaryFailure(f"HTTP {status}: {reason}", retry_after=retry_after)
    raise PermanentFailure(f"HTTP {status}: {reason}")
