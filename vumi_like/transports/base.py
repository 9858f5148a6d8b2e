"""``BaseTransport``: what every provider transport shares; a provider only maps fields.

A transport consumes ``<transport_name>.outbound`` and publishes ``.inbound`` and
``.event``. A subclass implements ``send`` (one outbound to the provider, returning the
provider's id(s) for it or raising an outcome from ``vumi_like.transports.outcomes``)
and, for what the provider sends back, calls ``publish_inbound`` and
``delivery_report``. The rest is here, the same for every provider:

* **Outcomes**: ids -> ``ack`` (the first id as ``sent_message_id``; every id, for a
  message sent in parts, in ``transport_metadata["provider_ids"]``);
  ``PermanentFailure`` -> ``nack`` with the provider's reason; ``TemporaryFailure`` ->
  a ``pending`` delivery report (the message is DELIVERY_RETRIED) and a broker-held
  retry under the shared retry policy (``Retry-After`` honoured), then a ``nack`` after
  the last attempt.
* **Rate limit**: ``max_tps`` sends per second, GCRA, shared by every replica through
  Redis when ``rate_limit_redis_url`` is set. Excess waits. A transport that sends a
  message in several requests (SMPP parts) sets ``limit_each_send = False`` and calls
  ``rate_limit()`` per request instead.
* **Provider ids**: what ``send`` returns is mapped to the message id in the message
  cache (``message_cache_class: redis`` to share it between replicas and keep it over
  restarts) for ``provider_id_ttl``; ``delivery_report`` finds the message through it,
  trying each form of the id the provider may report (``provider_id_forms``). A report
  whose id is not known yet (it came before the submit response, or on a replica that
  has not seen the mapping) waits on the broker (``<transport_name>.unmatched_reports``)
  and is tried again, ``unmatched_report_retries`` times, then dead-lettered with the
  reason. A final report shortens the mapping's life to ``final_report_ttl`` rather
  than deleting it, so the duplicates providers send still match. A provider that
  reports by our own ``message_id`` (``reported_message_id``: Kannel, fetching the
  ``dlr-url`` it was given) needs none of this: nothing is stored, and each report
  names its message, whatever a restart made an in-process cache forget. A cache that
  cannot be reached when a sent message's ids are to be stored is waited for, the
  delivery held and a warning logged at each try: without the mapping, its reports
  would find nothing.
* **Provider down**: a subclass calls ``provider_down(reason)`` when its connection is
  lost and ``provider_up()`` when it is back. A ``ProviderUnavailable`` from ``send``
  calls ``provider_down`` too, unless the transport sets ``tracks_connection`` (its
  client reports both edges itself); one that does not must then notice recovery
  itself (SMTP probes its server). While down, the outbound consumer is paused, so
  messages wait in the queue (or go to another replica) instead of failing one by one,
  and ``/health`` says ``provider: down`` with the reason.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import trio
from pydantic import BaseModel, Field

from vumi_like.caches import CacheError, CacheUnavailable, MessageCache, MessageCacheSettings
from vumi_like.config import BaseConfig
from vumi_like.messages import DeliveryStatus, Event, Message
from vumi_like.retry import RetryLater, RetryPolicy, RetrySettings, Unprocessable
from vumi_like.transports.outcomes import (
    PermanentFailure,
    ProviderUnavailable,
    TemporaryFailure,
)
from vumi_like.transports.rate_limit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from vumi_like.worker import BaseWorker, ReceiveOutboundConnector

__all__ = ["BaseTransport", "TransportConfig", "normalise_provider_id"]

FINAL_STATUSES = frozenset({DeliveryStatus.DELIVERED, DeliveryStatus.FAILED})
# Seconds between tries to store a sent message's provider ids while the cache is away.
STORE_RETRY_FIRST = 0.25
STORE_RETRY_MAX = 5.0


class TransportConfig(BaseConfig, RetrySettings, MessageCacheSettings):
    transport_name: str = Field(description="Connector name: consumes <transport_name>.outbound")
    max_tps: float | None = Field(
        default=None, gt=0, description="Most sends per second (unset: no limit); excess waits"
    )
    rate_limit_burst: int = Field(
        default=1, ge=1, description="Sends that may go back to back after an idle spell"
    )
    rate_limit_redis_url: str | None = Field(
        default=None,
        description="Redis holding the rate limit, so every replica shares one max_tps budget",
    )
    provider_id_ttl: float = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="Seconds a provider id stays matched to its message, for delivery reports",
    )
    final_report_ttl: float = Field(
        default=3600,
        gt=0,
        description="Seconds a provider id stays matched after its final delivery report",
    )
    unmatched_report_retries: int = Field(
        default=6,
        ge=0,
        description="Times a delivery report for an unknown provider id is tried again "
        "(backoff from 1 s, doubling) before it is dead-lettered",
    )


class UnmatchedReport(BaseModel):
    """A delivery report waiting for its provider id to be known."""

    provider_ids: list[str]
    delivery_status: DeliveryStatus
    transport_metadata: dict[str, Any] = Field(default_factory=dict)


class UnmatchedReportError(Unprocessable):
    """No message was ever found for a delivery report's provider id."""


def normalise_provider_id(provider_id: str) -> str:
    """A provider id as looked up: trimmed, lower-case, leading zeros dropped."""
    normal = provider_id.strip().lower()
    return normal.lstrip("0") or ("0" if normal else normal)


class BaseTransport(BaseWorker, abc.ABC):
    config_class: ClassVar[type[BaseConfig]] = TransportConfig
    config: TransportConfig

    # False for a transport that sends one message in several requests and calls
    # ``rate_limit()`` before each itself.
    limit_each_send: ClassVar[bool] = True
    # True for a transport whose client reports every loss and recovery of its
    # connection (``provider_down``/``provider_up`` from its callbacks): a
    # ``ProviderUnavailable`` from ``send`` then only retries, so that a send failing
    # just after a reconnect cannot pause a transport nothing would resume.
    tracks_connection: ClassVar[bool] = False

    connector: ReceiveOutboundConnector
    cache: MessageCache

    # -- what subclasses implement

    async def setup_provider(self) -> None:
        """Open provider connections and add HTTP routes; runs before consuming starts.

        Long-running tasks go in ``self.nursery``. Call ``provider_down`` here if the
        provider cannot be reached yet: the consumer starts paused.
        """

    async def teardown_provider(self) -> None:
        """Release what ``setup_provider`` took."""

    @abc.abstractmethod
    async def send(self, message: Message) -> Sequence[str]:
        """Send ``message``; return the provider's id(s) for it, or raise an outcome."""

    def provider_id_forms(self, provider_id: str) -> list[str]:
        """The forms of a reported id to look up, most likely first."""
        return [normalise_provider_id(provider_id)]

    def reported_message_id(self, provider_id: str) -> str | None:
        """The message a report names by our own id (a provider that echoes the
        ``message_id`` it was sent), which needs no look-up; None: look it up."""
        return None

    # -- the shared behaviour

    async def setup(self) -> None:
        self.retry_policy: RetryPolicy = self.config.retry_policy()
        self._report_policy = RetryPolicy(
            max_retries=self.config.unmatched_report_retries,
            delay_base=1,
            delay_exponent=2,
            jitter=0.2,
            delay_max=300,
        )
        self._provider_up = True
        self._provider_state = "up"
        self.rate_limiter = self._make_rate_limiter()
        self.cache = self.config.make_message_cache()
        await self.cache.open()
        await self.setup_provider()
        name = self.config.transport_name
        self.connector = await self.setup_receive_outbound_connector(name, self._handle_outbound)
        if not self._provider_up:
            self.connector.pause()
        self.unmatched_reports = await self.setup_job_connector(
            f"{name}.unmatched_reports", UnmatchedReport, self._match_later
        )

    async def teardown(self) -> None:
        try:
            await self.teardown_provider()
        finally:
            if self.rate_limiter is not None:
                self.rate_limiter.close()
            await self.cache.aclose()

    def _make_rate_limiter(self) -> RateLimiter | None:
        config = self.config
        if config.max_tps is None:
            return None
        if config.rate_limit_redis_url:
            return RedisRateLimiter(
                config.rate_limit_redis_url,
                f"vumi_like:rate:{config.transport_name}",
                config.max_tps,
                config.rate_limit_burst,
            )
        return LocalRateLimiter(config.max_tps, config.rate_limit_burst)

    async def rate_limit(self, count: int = 1) -> None:
        """Wait until ``count`` more provider requests fit within ``max_tps``."""
        if self.rate_limiter is not None:
            await self.rate_limiter.acquire(count)

    def provider_down(self, reason: str) -> None:
        """The provider cannot be reached: stop taking outbound until ``provider_up``."""
        if self._provider_up:
            self.log.warning("provider down: pausing outbound", reason=reason)
        self._provider_up = False
        self._provider_state = reason
        connector = getattr(self, "connector", None)
        if connector is not None:
            connector.pause()

    def provider_up(self) -> None:
        if not self._provider_up:
            self.log.info("provider up: resuming outbound")
        self._provider_up = True
        self._provider_state = "up"
        connector = getattr(self, "connector", None)
        if connector is not None:
            connector.resume()

    def health_components(self) -> dict[str, dict[str, Any]]:
        components = super().health_components()
        components["provider"] = {
            "ok": self._provider_up,
            "state": "up" if self._provider_up else "down",
            **({} if self._provider_up else {"reason": self._provider_state}),
        }
        return components

    async def _handle_outbound(self, message: Message, attempt: int) -> None:
        if self.limit_each_send:
            await self.rate_limit()
        try:
            provider_ids = list(await self.send(message))
        except PermanentFailure as failure:
            self.log.info("provider refused", message_id=message.message_id, reason=failure.reason)
            await self.connector.publish_event(Event.nack(message, failure.reason))
            return
        except TemporaryFailure as failure:
            if isinstance(failure, ProviderUnavailable) and not self.tracks_connection:
                self.provider_down(failure.reason)
            await self._retry_or_give_up(message, attempt, failure)
            return
        await self._acked(message, provider_ids)

    async def _retry_or_give_up(
        self, message: Message, attempt: int, failure: TemporaryFailure
    ) -> None:
        tries = attempt + 1
        if self.retry_policy.gives_up_after(attempt):
            reason = f"{failure.reason} (gave up after {tries} attempts)"
            self.log.warning("giving up", message_id=message.message_id, reason=reason)
            await self.connector.publish_event(Event.nack(message, reason))
            return
        await self.connector.publish_event(
            Event.delivery_report(
                message,
                DeliveryStatus.PENDING,
                transport_metadata={"retry": {"attempt": tries, "reason": failure.reason}},
            )
        )
        raise RetryLater(self.retry_policy.delay(attempt, failure.retry_after), failure.reason)

    async def _acked(self, message: Message, provider_ids: list[str]) -> None:
        if not provider_ids:
            raise ValueError(f"{type(self).__name__}.send returned no provider id")
        if any(self.reported_message_id(p) != message.message_id for p in provider_ids):
            await self._store_provider_ids(message, provider_ids)
        metadata = {"provider_ids": provider_ids} if len(provider_ids) > 1 else {}
        await self.connector.publish_event(
            Event.ack(message, sent_message_id=provider_ids[0], transport_metadata=metadata)
        )

    async def _store_provider_ids(self, message: Message, provider_ids: list[str]) -> None:
        """Map ``provider_ids`` to the message, waiting out a cache that cannot be
        reached: the message is sent, so without the mapping its reports would find
        nothing. Meanwhile the delivery stays in hand (a transport stopped now sends
        it again), and each failed try is a warning."""
        normal = [normalise_provider_id(provider_id) for provider_id in provider_ids]
        wait = STORE_RETRY_FIRST
        while True:
            try:
                await self.cache.store_provider_ids(
                    self.config.transport_name,
                    normal,
                    message.message_id,
                    self.config.provider_id_ttl,
                )
                return
            except CacheUnavailable as exc:
                self.log.warning(
                    "provider id not stored yet: waiting for the cache",
                    message_id=message.message_id,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=wait,
                )
            except CacheError as exc:
                # Refused, not unreachable: trying again would not help. Its reports
                # will wait as unmatched, then be dead-lettered with the reason.
                self.log.error(
                    "provider id not stored", message_id=message.message_id, error=str(exc)
                )
                return
            await trio.sleep(wait)
            wait = min(wait * 2, STORE_RETRY_MAX)

    # -- what the provider sends back

    async def publish_inbound(self, message: Message) -> None:
        await self.connector.publish_inbound(message)

    async def delivery_report(
        self,
        provider_id: str,
        status: DeliveryStatus,
        transport_metadata: Mapping[str, Any] | None = None,
    ) -> bool:
        """Publish a delivery report for the message sent as ``provider_id``.

        Returns False when the id is not known (yet): the report then waits on the
        broker and is matched later, or dead-lettered. Either way it is safe with the
        broker when this returns, so the provider may be told it was received.
        """
        metadata = dict(transport_metadata or {})
        message_id = self.reported_message_id(provider_id)
        if message_id is not None:
            await self.connector.publish_event(
                Event.delivery_report(message_id, status, transport_metadata=metadata)
            )
            return True
        forms = self.provider_id_forms(provider_id)
        if await self._report(forms, status, metadata):
            return True
        self.log.info("delivery report for an unknown provider id: trying later", forms=forms)
        report = UnmatchedReport(
            provider_ids=forms, delivery_status=status, transport_metadata=metadata
        )
        await self.unmatched_reports.publish(report)
        return False

    async def _report(
        self, forms: Sequence[str], status: DeliveryStatus, metadata: dict[str, Any]
    ) -> bool:
        name = self.config.transport_name
        for form in forms:
            message_id = await self.cache.get_provider_message_id(name, form)
            if message_id is None:
                continue
            await self.connector.publish_event(
                Event.delivery_report(message_id, status, transport_metadata=metadata)
            )
            if status in FINAL_STATUSES:
                await self.cache.expire_provider_id(name, form, self.config.final_report_ttl)
            return True
        return False

    async def _match_later(self, report: UnmatchedReport, attempt: int) -> None:
        if await self._report(
            report.provider_ids, report.delivery_status, report.transport_metadata
        ):
            return
        if self._report_policy.gives_up_after(attempt):
            raise UnmatchedReportError(
                f"no message sent as provider id {report.provider_ids[0]!r} "
                f"after {attempt + 1} attempts"
            )
        raise RetryLater(self._report_policy.delay(attempt), "provider id not known yet")
