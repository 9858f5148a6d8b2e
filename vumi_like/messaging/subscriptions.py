"""Each tenant's webhook subscriptions, read from the store at most once a second.

Every status change of every message asks "who wants this?": three times per message
for a message that is queued, sent and delivered, in the API and the dispatcher. The
answer changes only when a client subscribes or unsubscribes, which is rare; reading
it from the store every time was a store round trip per event. So each worker keeps
each tenant's subscriptions for ``max_age`` seconds.

What that costs, and why it is safe: a subscription made a moment ago may miss the
events of the next ``max_age`` seconds in this worker (a client sees a new webhook
start within a second). A deleted one may still be queued for as long. The
dispatcher posts a webhook's first attempt, made while it handles the event or from
a job, with what it read here (``find``), so a subscription deleted less than
``max_age`` ago may get one more webhook; a retry reads its subscription afresh and
is dropped if it is gone (``max_age`` 0 makes every read fresh).

When a tenant's entry expires, the calls that find it so at once share one read: the
first reads, the others wait for its answer (or its error), rather than each reading
the same rows.
"""

from __future__ import annotations

import attrs
import trio

from vumi_like.stores import MessageStore, Webhook

__all__ = ["Subscriptions"]


@attrs.define(eq=False)
class _Read:
    """One read of a tenant's subscriptions, awaited by every call that needs it."""

    done: trio.Event = attrs.field(factory=trio.Event)
    webhooks: list[Webhook] = attrs.field(factory=list)
    read: bool = False
    error: Exception | None = None


class Subscriptions:
    def __init__(self, store: MessageStore, *, max_age: float = 1.0) -> None:
        self.store = store
        self.max_age = max_age
        self._by_tenant: dict[str, tuple[float, list[Webhook]]] = {}
        self._reading: dict[str, _Read] = {}

    async def wanting(self, tenant: str, status_code: str) -> list[Webhook]:
        """The tenant's subscriptions that want ``status_code``, as of ``max_age`` ago."""
        if self.max_age <= 0:
            return await self.store.webhooks_for(tenant, status_code)
        return [webhook for webhook in await self._kept(tenant) if webhook.wants(status_code)]

    async def find(self, tenant: str, webhook_id: str) -> Webhook | None:
        """The tenant's subscription ``webhook_id`` as of ``max_age`` ago; None if it had
        none then, or nothing is kept (``max_age`` 0): the store then has the answer."""
        if self.max_age <= 0:
            return None
        for webhook in await self._kept(tenant):
            if webhook.webhook_id == webhook_id:
                return webhook
        return None

    async def _kept(self, tenant: str) -> list[Webhook]:
        now = trio.current_time()
        cached = self._by_tenant.get(tenant)
        if cached is not None and now - cached[0] <= self.max_age:
            return cached[1]
        return await self._read(tenant, now)

    async def _read(self, tenant: str, now: float) -> list[Webhook]:
        while (read := self._reading.get(tenant)) is not None:
            # Another call is reading them: its answer is ours, and so is its error.
            # If it was cancelled instead, the loop finds no reader and reads itself.
            await read.done.wait()
            if read.error is not None:
                raise read.error
            if read.read:
                return read.webhooks
        read = self._reading[tenant] = _Read()
        try:
            read.webhooks = await self._all(tenant)
            read.read = True
        except Exception as exc:
            read.error = exc
            raise
        finally:
            del self._reading[tenant]
            read.done.set()
        self._by_tenant[tenant] = (now, read.webhooks)
        return read.webhooks

    async def _all(self, tenant: str) -> list[Webhook]:
        webhooks: list[Webhook] = []
        cursor = None
        while True:
            page = await self.store.list_webhooks(tenant, cursor=cursor)
            webhooks.extend(page.items)
            if page.next_cursor is None:
                return webhooks
            cursor = page.next_cursor
