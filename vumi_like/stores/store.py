"""``MessageStore``: the message store's async interface, over SQLite or PostgreSQL.

Why threads
-----------
The store uses SQLAlchemy Core with its synchronous drivers (sqlite3, psycopg 3) in
worker threads, one ``trio.to_thread.run_sync`` per call. The async drivers and
SQLAlchemy's async mode run only on asyncio; running them on the broker's asyncio loop
would let a slow query delay heartbeats and acks. A thread hop costs tens of
microseconds against a query's network round trip.

The threads are bounded by the store's own ``CapacityLimiter`` (``max_threads``), not
trio's shared default one: a burst of queries then waits in trio, cancellably, rather
than taking every default thread that other parts of the worker (SMTP, DNS) need, and
the connection pool is as large as the limit, so a thread never waits for a connection.

Why calls are not abandoned on cancellation
-------------------------------------------
A query in a thread cannot be interrupted, so a cancelled task still waits for its
thread (``abandon_on_cancel`` stays off). Abandoning a write would leave the caller not
knowing whether its transaction committed: a dispatcher cancelled at shutdown would
treat an applied event as not applied, or the reverse, and an abandoned thread could
still be using a connection when ``aclose`` disposes of the pool. Instead every wait is
bounded by the database (statement, lock and busy timeouts; see ``database.py``), so a
cancelled task resumes within ``statement_timeout`` at worst, knowing the outcome.

Each method is one transaction, or a part of one: the calls a busy worker makes many
of at once (creating messages, applying events, reading a webhook's target, recording
a post) share a transaction with those of their kind waiting at the same moment
(``grouping.py``), each keeping its own outcome. Times in and out are as ``models.py``
says.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import trio

from vumi_like.stores import migrate
from vumi_like.stores.client_secrets import decoy_hash, hash_secret, verify_secret
from vumi_like.stores.database import Database, database_url, translated_errors
from vumi_like.stores.errors import StoreError
from vumi_like.stores.grouping import Group
from vumi_like.stores.models import (
    ChannelStatus,
    ChannelType,
    ClientInfo,
    ConversationMessageStatus,
    DeliveryState,
    Direction,
    EventOutcome,
    IdempotencyClaim,
    NewBatch,
    NewMessage,
    Notification,
    NotificationTarget,
    NotificationUser,
    Page,
    Party,
    Permission,
    SessionStatus,
    StoredMessage,
    VcitaBusiness,
    VcitaChannel,
    VcitaMessage,
    VcitaSession,
    Webhook,
    WebhookDelivery,
)
from vumi_like.stores.pagination import MAX_PAGE_SIZE
from vumi_like.stores.queries import (
    clients,
    conversations,
    forget_unsent,
    idempotency,
    messages,
    notifications,
    parties,
    to_db,
    webhooks,
)
from vumi_like.stores.schema import unsent_messages, unsent_notifications
from vumi_like.stores.status import MessageStatus

__all__ = ["MessageStore", "open_store"]

T = TypeVar("T")

DEFAULT_IDEMPOTENCY_TTL = 24 * 60 * 60.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _first_argument(args: tuple[Any, ...]) -> Any:
    """A grouped call's key: the id of the row it locks (see ``grouping.py``)."""
    return args[0]


def _first_two_arguments(args: tuple[Any, ...]) -> Any:
    """A grouped call's key when its row is named by two: an idempotency key's owner
    and the key."""
    return args[0], args[1]


def _tenant_if_verified(secret: str, found: tuple[str, str] | None) -> str | None:
    if found is None:
        # Checked against a decoy all the same, so that the answer takes as long.
        verify_secret(secret, decoy_hash())
        return None
    tenant, stored = found
    return tenant if verify_secret(secret, stored) else None


class MessageStore:
    """The message store at ``url``: ``sqlite:///path/file.db`` or ``postgresql://...``.

    Options: ``max_threads`` (concurrent queries, default 8), ``statement_timeout``
    (seconds any query or lock wait may take, default 5), ``pool_size`` (connections,
    default ``max_threads``), ``upgrade`` (migrate the schema to head on open, default
    True; if False, open refuses a schema that is not at head), ``schema`` (PostgreSQL:
    the schema holding the tables), ``clock`` (returns the current time, aware).

    Construction checks the URL and options (``StoreError``) and touches nothing.
    ``await open()`` (or ``async with``) connects and migrates, raising
    ``StoreUnavailable`` if the database can't be reached; a method called on a store
    that isn't open raises ``StoreError``.
    """

    def __init__(
        self,
        url: str,
        *,
        max_threads: int = 8,
        statement_timeout: float = 5.0,
        pool_size: int | None = None,
        upgrade: bool = True,
        schema: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if max_threads < 1:
            raise StoreError(f"max_threads must be at least 1, got {max_threads}")
        if statement_timeout <= 0:
            raise StoreError(f"statement_timeout must be positive, got {statement_timeout}")
        database_url(url)  # a URL we can't use is refused here, before anything runs
        self._url = url
        self._statement_timeout = statement_timeout
        self._pool_size = max_threads if pool_size is None else pool_size
        self._schema = schema
        self._upgrade = upgrade
        self._clock = clock
        self._limiter = trio.CapacityLimiter(max_threads)
        self._database: Database | None = None
        # The calls a busy dispatcher or API makes many of at once share transactions.
        self._creates = Group(self._open_database, self._limiter, together=messages.create_many)
        # An event locks its message's row: by message id, so batches never deadlock.
        self._events = Group(
            self._open_database,
            self._limiter,
            order=_first_argument,
            together=messages.apply_events,
        )
        self._deliveries = Group(
            self._open_database,
            self._limiter,
            order=_first_argument,
            together=webhooks.record_deliveries,
        )
        self._targets = Group(self._open_database, self._limiter, read_only=True)
        # Every request with an Idempotency-Key claims it, then saves its answer: two
        # transactions a request, shared by the requests in flight, which lock their
        # keys' rows in one order.
        self._claims = Group(self._open_database, self._limiter, order=_first_two_arguments)
        self._answers = Group(self._open_database, self._limiter, order=_first_two_arguments)

    # -- life cycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._database is not None:
            raise StoreError("the message store is open already")
        database = Database(
            self._url,
            statement_timeout=self._statement_timeout,
            pool_size=self._pool_size,
            schema=self._schema,
        )
        try:
            await trio.to_thread.run_sync(self._prepare, database, limiter=self._limiter)
        except BaseException:
            database.dispose()
            raise
        self._database = database

    def _prepare(self, database: Database) -> None:
        if self._upgrade:
            timeout = max(migrate.MIGRATION_TIMEOUT, self._statement_timeout)
            migrate.upgrade(self._url, schema=database.schema, statement_timeout=timeout)
        revision = database.transaction(migrate.revision_of, read_only=True)
        if revision != migrate.head_revision():
            raise StoreError(
                f"the message store at {database.display} has schema {revision}, this code "
                f"needs {migrate.head_revision()}: run `vumi-like db upgrade`"
            )

    async def aclose(self) -> None:
        database, self._database = self._database, None
        if database is not None:
            with translated_errors(database.display):
                await trio.to_thread.run_sync(database.dispose, limiter=self._limiter)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _open_database(self) -> Database:
        if self._database is None:
            raise StoreError("the message store is not open")
        return self._database

    async def _run(self, fn: Callable[..., T], *args: Any, read_only: bool = False) -> T:
        """``fn(connection, *args)`` in one transaction on a worker thread."""
        if self._database is None:
            raise StoreError("the message store is not open")
        call = functools.partial(self._database.transaction, fn, *args, read_only=read_only)
        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    def _now(self) -> datetime:
        return to_db(self._clock())

    # -- messages ---------------------------------------------------------------------

    async def create_messages(
        self, new: Sequence[NewMessage], *, batch: NewBatch | None = None, unsent: bool = True
    ) -> list[StoredMessage]:
        """Store outbound messages, and their batch if given, all or none.

        Each starts with its ``status`` (QUEUED unless said otherwise) and a "created"
        transition. With ``batch``, every message must name it and share its tenant.
        Each QUEUED one is also among the unsent (``forget_unsent``) if ``unsent``.
        ``AlreadyExists`` if a message or the batch id is taken.
        """
        return await self._creates.run(
            messages.create_messages, list(new), batch, self._now(), unsent
        )

    async def resume_messages(
        self, new: Sequence[NewMessage], *, batch: NewBatch | None = None, unsent: bool = True
    ) -> list[StoredMessage]:
        """``create_messages`` for a request resuming its own abandoned ``Idempotency-Key``
        claim (``RequestIds.resumed``): what its first run stored, as it is now, if it
        did; else they are created."""
        return await self._run(messages.resume_messages, list(new), batch, self._now(), unsent)

    async def forget_unsent(self, message_ids: Sequence[str]) -> None:
        """Strike ``message_ids`` from the messages stored and not yet known to be
        published: the broker confirmed them, or their request marked them failed."""
        if message_ids:
            await self._run(forget_unsent, unsent_messages, list(message_ids))

    async def fail_abandoned_unsent(
        self, older_than: float, *, event_type: str, raw: dict[str, Any], limit: int = 500
    ) -> list[StoredMessage]:
        """Mark DELIVERY_FAILED, by an ``event_type`` event with ``raw``, the messages
        stored over ``older_than`` seconds ago and since neither known to be published
        nor failed by their request: their request's replica died in between. At most
        ``limit`` of them, oldest first. Returns them with their transitions, and
        those a sweep had marked and not struck off (it died before their webhooks
        were queued); strike each off with ``forget_unsent`` once its webhooks are.
        One that an event moved on meanwhile is struck off and left as it is."""
        now = self._now()
        stored_before = now - timedelta(seconds=older_than)
        return await self._run(
            messages.fail_abandoned_unsent, stored_before, event_type, raw, now, limit
        )

    async def record_inbound(self, new: NewMessage) -> StoredMessage:
        """Store an inbound message, RECEIVED (whatever ``new.status`` says)."""
        return await self._run(messages.record_inbound, new, self._now())

    async def get_message(self, tenant: str, message_id: str) -> StoredMessage | None:
        """The tenant's message with its transitions in order; None if it has no such one."""
        return await self._run(messages.get_message, tenant, message_id, read_only=True)

    async def apply_event(
        self,
        message_id: str,
        *,
        event_id: str | None,
        event_type: str,
        proposed_status: MessageStatus,
        occurred_at: datetime,
        raw: dict[str, Any] | None,
    ) -> EventOutcome | None:
        """Record an event about a message and move its status forwards if it may.

        The status becomes ``next_status(current, proposed_status)``; the event is
        recorded either way, with the status before and after, unless its ``event_id``
        was recorded for this message before (``duplicate=True``: nothing recorded).
        Safe against concurrent calls for one message (``queries/messages.py``).
        None if there is no such message.
        """
        return await self._events.run(
            messages.apply_event,
            message_id,
            event_id,
            str(event_type),
            MessageStatus(proposed_status),
            occurred_at,
            raw,
            self._now(),
        )

    async def batch_statuses(
        self, tenant: str, batch_id: str
    ) -> list[tuple[str, MessageStatus]] | None:
        """Each message of the tenant's batch with its status; None if no such batch."""
        return await self._run(messages.batch_statuses, tenant, batch_id, read_only=True)

    async def history(
        self,
        tenant: str,
        party_id: str,
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        cursor: str | None = None,
        limit: int = MAX_PAGE_SIZE,
    ) -> Page[StoredMessage]:
        """The party's messages, both directions, oldest first, by UTC date (inclusive)."""
        return await self._run(
            messages.history, tenant, party_id, from_date, to_date, cursor, limit, read_only=True
        )

    async def list_messages(
        self, tenant: str, *, cursor: str | None = None, limit: int = MAX_PAGE_SIZE
    ) -> Page[StoredMessage]:
        """All the tenant's messages, oldest first."""
        return await self._run(messages.list_messages, tenant, cursor, limit, read_only=True)

    # -- webhooks ---------------------------------------------------------------------

    async def add_webhook(
        self, tenant: str, url: str, event_types: Sequence[str], secret: str
    ) -> Webhook:
        """Subscribe ``url`` to the status codes in ``event_types`` (empty: all)."""
        if isinstance(event_types, str):
            raise StoreError("event_types is a list of status codes, not one string")
        codes = tuple(event_types)
        return await self._run(webhooks.add_webhook, tenant, url, codes, secret, self._now())

    async def get_webhook(self, tenant: str, webhook_id: str) -> Webhook | None:
        return await self._run(webhooks.get_webhook, tenant, webhook_id, read_only=True)

    async def list_webhooks(
        self, tenant: str, *, cursor: str | None = None, limit: int = MAX_PAGE_SIZE
    ) -> Page[Webhook]:
        """The tenant's webhooks, oldest first."""
        return await self._run(webhooks.list_webhooks, tenant, cursor, limit, read_only=True)

    async def delete_webhook(self, tenant: str, webhook_id: str) -> bool:
        """Remove the tenant's webhook; False if it had no such one."""
        return await self._run(webhooks.delete_webhook, tenant, webhook_id)

    async def webhooks_for(self, tenant: str, status_code: str) -> list[Webhook]:
        """The tenant's webhooks that want ``status_code`` (``DELIVERED``, ...)."""
        return await self._run(webhooks.webhooks_for, tenant, status_code, read_only=True)

    async def record_delivery(
        self,
        delivery_id: str,
        webhook_id: str,
        message_id: str,
        status_code: str,
        state: DeliveryState | str,
        attempts: int,
        last_error: str | None = None,
    ) -> None:
        """Create or update the record of one webhook post (see ``queries/webhooks.py``)."""
        await self._deliveries.run(
            webhooks.record_delivery,
            delivery_id,
            webhook_id,
            message_id,
            status_code,
            DeliveryState(state),
            attempts,
            last_error,
            self._now(),
        )

    async def get_delivery(self, delivery_id: str) -> WebhookDelivery | None:
        return await self._run(webhooks.get_delivery, delivery_id, read_only=True)

    async def delivery_target(
        self, tenant: str, webhook_id: str, delivery_id: str
    ) -> tuple[Webhook | None, WebhookDelivery | None]:
        """The subscription a webhook job posts for (None once deleted) and its delivery's
        record so far (None before the first attempt): one query's round trip, not two."""
        return await self._targets.run(webhooks.delivery_target, tenant, webhook_id, delivery_id)

    # -- idempotency keys -------------------------------------------------------------

    async def claim_idempotency_key(
        self,
        tenant: str,
        key: str,
        request_hash: str,
        *,
        ttl: float = DEFAULT_IDEMPOTENCY_TTL,
        abandoned_after: float | None = None,
    ) -> IdempotencyClaim:
        """Claim ``key`` for a request (see ``queries/idempotency.py``).

        A claim older than ``ttl`` seconds is forgotten and the key claimed afresh, and
        so is one still in progress (never answered nor released) after
        ``abandoned_after`` seconds: longer than any live request may take.
        """
        now = self._now()
        return await self._claims.run(
            idempotency.claim, tenant, key, request_hash, ttl, now, abandoned_after
        )

    async def save_idempotent_response(
        self, tenant: str, key: str, status: int, body: Any, *, claimed_at: datetime | None = None
    ) -> None:
        """Keep the response to the request that claimed ``key``, for replays; with
        ``claimed_at`` (the claim's), only while that claim holds the key."""
        await self._answers.run(idempotency.save_response, tenant, key, status, body, claimed_at)

    async def release_idempotency_key(
        self, tenant: str, key: str, *, claimed_at: datetime | None = None
    ) -> bool:
        """Give up a claim still in progress (the request failed before sending anything);
        with ``claimed_at`` (the claim's), only that claim, not one taken over since."""
        return await self._run(idempotency.release, tenant, key, claimed_at)

    # -- parties ----------------------------------------------------------------------

    async def set_party(self, tenant: str, party_id: str, channel: str, address: str) -> Party:
        """Create or replace how to reach the tenant's party ``party_id``."""
        return await self._run(parties.set_party, tenant, party_id, channel, address, self._now())

    async def get_party(self, tenant: str, party_id: str) -> Party | None:
        return await self._run(parties.get_party, tenant, party_id, read_only=True)

    async def delete_party(self, tenant: str, party_id: str) -> bool:
        return await self._run(parties.delete_party, tenant, party_id)

    async def list_parties(
        self, tenant: str, *, cursor: str | None = None, limit: int = MAX_PAGE_SIZE
    ) -> Page[Party]:
        """The tenant's parties, by id."""
        return await self._run(parties.list_parties, tenant, cursor, limit, read_only=True)

    # -- OAuth2 clients ---------------------------------------------------------------

    async def add_client(self, client_id: str, tenant: str, secret: str) -> None:
        """Register a client of ``tenant``; ``AlreadyExists`` if ``client_id`` is taken."""
        # Hashed first, on its own thread hop: no transaction waits for scrypt.
        secret_hash = await trio.to_thread.run_sync(hash_secret, secret, limiter=self._limiter)
        await self._run(clients.add_client, client_id, tenant, secret_hash, self._now())

    async def verify_client(self, client_id: str, secret: str) -> str | None:
        """The client's tenant if ``secret`` is its secret; None otherwise."""
        found = await self._run(clients.client_credentials, client_id, read_only=True)
        return await trio.to_thread.run_sync(
            _tenant_if_verified, secret, found, limiter=self._limiter
        )

    async def list_clients(self) -> list[ClientInfo]:
        return await self._run(clients.list_clients, read_only=True)

    async def remove_client(self, client_id: str) -> bool:
        return await self._run(clients.remove_client, client_id)

    # -- notifications (seed 004) -----------------------------------------------------

    async def add_notification_user(
        self, tenant: str, username: str, real_name: str, client_id: str
    ) -> NotificationUser:
        """Register a user, signing in as OAuth2 ``client_id``; ``AlreadyExists`` if the
        username or the client is taken."""
        return await self._run(
            notifications.add_user, tenant, username, real_name, client_id, self._now()
        )

    async def notification_user_by_client(self, client_id: str) -> NotificationUser | None:
        return await self._run(notifications.user_by_client, client_id, read_only=True)

    async def notification_user(self, tenant: str, username: str) -> NotificationUser | None:
        return await self._run(notifications.user_by_name, tenant, username, read_only=True)

    async def set_notification_target(
        self, tenant: str, target_type: str, target_id: str, name: str, form_id: str | None = None
    ) -> None:
        """Create or update a form (``xform``) or project."""
        await self._run(
            notifications.set_target, tenant, target_type, target_id, name, form_id, self._now()
        )

    async def create_notification_target(
        self,
        tenant: str,
        target_type: str,
        target_id: str,
        name: str,
        form_id: str | None,
        admin: str,
    ) -> NotificationTarget:
        """Create a form (``xform``) or project with ``admin`` as its admin, all or none;
        ``AlreadyExists`` if it exists."""
        return await self._run(
            notifications.create_target,
            tenant,
            target_type,
            target_id,
            name,
            form_id,
            admin,
            self._now(),
        )

    async def notification_target(
        self, tenant: str, target_type: str, target_id: str
    ) -> NotificationTarget | None:
        return await self._run(
            notifications.get_target, tenant, target_type, target_id, read_only=True
        )

    async def set_notification_member(
        self,
        tenant: str,
        target_type: str,
        target_id: str,
        username: str,
        permission: Permission | str,
    ) -> None:
        await self._run(
            notifications.set_member,
            tenant,
            target_type,
            target_id,
            username,
            Permission(permission),
        )

    async def remove_notification_member(
        self, tenant: str, target_type: str, target_id: str, username: str
    ) -> bool:
        return await self._run(
            notifications.remove_member, tenant, target_type, target_id, username
        )

    async def create_notification(
        self,
        tenant: str,
        target_type: str,
        target_id: str,
        author: str,
        message: str,
        payload: dict[str, Any],
        deliveries: dict[str, Any],
        *,
        request_id: str | None = None,
    ) -> Notification:
        """Store a notification; ``request_id`` is the id its request gave it
        (``RequestIds``), to find it again with ``resume_notification``."""
        return await self._run(
            notifications.create_notification,
            tenant,
            target_type,
            target_id,
            author,
            message,
            payload,
            deliveries,
            self._now(),
            request_id,
        )

    async def resume_notification(self, tenant: str, request_id: str) -> Notification | None:
        """The notification its request gave ``request_id``, if it was stored, for that
        request resuming its abandoned ``Idempotency-Key`` claim: kept from the unsent
        sweep for another request's time."""
        return await self._run(notifications.resume_notification, tenant, request_id, self._now())

    async def get_notification(self, tenant: str, pk: int) -> Notification | None:
        return await self._run(notifications.get_notification, tenant, pk, read_only=True)

    async def delete_notification(self, tenant: str, pk: int) -> bool:
        return await self._run(notifications.delete_notification, tenant, pk)

    async def list_notifications(
        self,
        tenant: str,
        target_type: str,
        target_id: str,
        *,
        author: str | None = None,
        cursor: str | None = None,
        limit: int = MAX_PAGE_SIZE,
    ) -> Page[Notification]:
        """A target's notifications (only ``author``'s, if given), newest first."""
        return await self._run(
            notifications.list_notifications,
            tenant,
            target_type,
            target_id,
            author,
            cursor,
            limit,
            read_only=True,
        )

    async def record_notification_delivery(
        self, pk: int, backend: str, outcome: dict[str, Any]
    ) -> bool:
        """Set ``backend``'s outcome on notification ``pk``; False if it was deleted."""
        return await self._run(notifications.record_delivery, pk, backend, outcome)

    async def forget_unsent_notifications(self, pks: Sequence[int]) -> None:
        """Strike ``pks`` from the notifications stored and not yet known to be
        published: the broker confirmed them, or refused them, or they were deleted."""
        if pks:
            await self._run(forget_unsent, unsent_notifications, list(pks))

    async def fail_abandoned_unsent_notifications(
        self, older_than: float, outcome: dict[str, Any], *, limit: int = 500
    ) -> list[int]:
        """Set ``outcome`` on each backend still ``queued`` of the notifications stored
        over ``older_than`` seconds ago and since never known to be published: their
        request's replica died in between. At most ``limit`` of them, oldest first;
        the ids of those changed."""
        stored_before = self._now() - timedelta(seconds=older_than)
        return await self._run(notifications.fail_abandoned_unsent, stored_before, outcome, limit)

    # -- conversations with vcita (seed 002) ----------------------------------------
    # ``tenant`` names the communication app; see ``queries/conversations.py``.

    async def set_vcita_token(self, tenant: str, business_uid: str, token: str) -> bool:
        """Set the business's VCS access token; True if the business is new."""
        return await self._run(conversations.set_token, tenant, business_uid, token, self._now())

    async def vcita_access_token(self, tenant: str, business_uid: str) -> str | None:
        return await self._run(conversations.access_token, tenant, business_uid, read_only=True)

    async def list_vcita_businesses(self, tenant: str) -> list[VcitaBusiness]:
        return await self._run(conversations.list_businesses, tenant, read_only=True)

    async def add_vcita_channel(
        self,
        tenant: str,
        business_uid: str,
        channel_type: ChannelType | str,
        transport_name: str,
        address: str,
    ) -> VcitaChannel:
        """A new pending channel; ``AlreadyExists`` if the address has a live one."""
        return await self._run(
            conversations.add_channel,
            tenant,
            business_uid,
            ChannelType(channel_type),
            transport_name,
            address,
            self._now(),
        )

    async def vcita_channel(self, tenant: str, channel_id: str) -> VcitaChannel | None:
        return await self._run(conversations.channel, tenant, channel_id, read_only=True)

    async def vcita_channel_by_uid(self, tenant: str, channel_uid: str) -> VcitaChannel | None:
        return await self._run(conversations.channel_by_uid, tenant, channel_uid, read_only=True)

    async def vcita_channel_for_address(
        self, tenant: str, transport_name: str, address: str
    ) -> VcitaChannel | None:
        return await self._run(
            conversations.channel_for_address, tenant, transport_name, address, read_only=True
        )

    async def list_vcita_channels(self, tenant: str) -> list[VcitaChannel]:
        return await self._run(conversations.list_channels, tenant, read_only=True)

    async def vcita_channel_created(
        self, tenant: str, channel_id: str, channel_uid: str, status: ChannelStatus | str
    ) -> VcitaChannel | None:
        return await self._run(
            conversations.channel_created,
            tenant,
            channel_id,
            channel_uid,
            ChannelStatus(status),
            self._now(),
        )

    async def set_vcita_channel_status(
        self, tenant: str, channel_uid: str, status: ChannelStatus | str
    ) -> VcitaChannel | None:
        return await self._run(
            conversations.set_channel_status,
            tenant,
            channel_uid,
            ChannelStatus(status),
            self._now(),
        )

    async def vcita_session(
        self, tenant: str, channel_id: str, external_uid: str
    ) -> VcitaSession | None:
        return await self._run(
            conversations.session, tenant, channel_id, external_uid, read_only=True
        )

    async def vcita_session_by_uid(self, tenant: str, session_uid: str) -> VcitaSession | None:
        return await self._run(conversations.session_by_uid, tenant, session_uid, read_only=True)

    async def claim_vcita_session(
        self, tenant: str, channel_id: str, external_uid: str, *, stale_after: float
    ) -> tuple[VcitaSession, bool]:
        """Claim the opening of the client's session on the channel (one opener at a
        time): the session row, and whether this call claimed it. A claim older than
        ``stale_after`` seconds is taken over."""
        now = self._now()
        return await self._run(
            conversations.claim_session,
            tenant,
            channel_id,
            external_uid,
            now,
            now - timedelta(seconds=stale_after),
        )

    async def release_vcita_session_claim(self, session: VcitaSession) -> None:
        """Drop ``session``'s claim (``claim_vcita_session``), its opening having failed."""
        await self._run(
            conversations.release_session_claim,
            session.tenant,
            session.channel_id,
            session.external_uid,
            to_db(session.updated_at),
        )

    async def save_vcita_session(
        self,
        tenant: str,
        channel_id: str,
        external_uid: str,
        session_uid: str,
        status: SessionStatus | str,
    ) -> VcitaSession:
        return await self._run(
            conversations.save_session,
            tenant,
            channel_id,
            external_uid,
            session_uid,
            SessionStatus(status),
            self._now(),
        )

    async def set_vcita_session_status(
        self,
        tenant: str,
        session_uid: str,
        status: SessionStatus | str,
        *,
        only_from: SessionStatus | str | None = None,
    ) -> VcitaSession | None:
        """Set the session's status; with ``only_from``, only if it has that one."""
        return await self._run(
            conversations.set_session_status,
            tenant,
            session_uid,
            SessionStatus(status),
            None if only_from is None else SessionStatus(only_from),
            self._now(),
        )

    async def record_vcita_typing(
        self, tenant: str, session_uid: str, typing: bool
    ) -> VcitaSession | None:
        return await self._run(
            conversations.record_typing, tenant, session_uid, typing, self._now()
        )

    async def add_vcita_message(
        self,
        tenant: str,
        *,
        message_id: str,
        channel_id: str,
        message_uid: str,
        direction: Direction | str,
        external_uid: str,
        content: str | None,
        status: ConversationMessageStatus | str = ConversationMessageStatus.PENDING,
    ) -> tuple[VcitaMessage, bool]:
        """Store a message, or find the channel's one with this ``message_uid``; True if
        stored now."""
        return await self._run(
            conversations.add_message,
            tenant,
            message_id,
            channel_id,
            message_uid,
            Direction(direction),
            external_uid,
            content,
            ConversationMessageStatus(status),
            self._now(),
        )

    async def vcita_message(self, message_id: str) -> VcitaMessage | None:
        return await self._run(conversations.get_message, message_id, read_only=True)

    async def vcita_message_by_uid(
        self, tenant: str, channel_id: str, message_uid: str
    ) -> VcitaMessage | None:
        return await self._run(
            conversations.message_by_uid, tenant, channel_id, message_uid, read_only=True
        )

    async def update_vcita_message_status(
        self, message_id: str, proposed: ConversationMessageStatus | str
    ) -> VcitaMessage | None:
        """Move the message's status forwards if ``proposed`` is a step forwards."""
        return await self._run(
            conversations.update_message_status,
            message_id,
            ConversationMessageStatus(proposed),
            self._now(),
        )

    async def set_vcita_message_reported(
        self, message_id: str, status: ConversationMessageStatus | str
    ) -> None:
        """Record that VCS was told ``status`` for the message."""
        await self._run(
            conversations.set_message_reported,
            message_id,
            ConversationMessageStatus(status),
            self._now(),
        )


@asynccontextmanager
async def open_store(url: str, **options: Any) -> AsyncIterator[MessageStore]:
    """An open ``MessageStore`` (options as for the class), closed on leaving."""
    async with MessageStore(url, **options) as store:
        yield store
