"""The ``/v1`` API (seed 000): one send for every channel, statuses, channels, webhooks.

    POST   /v1/messages            one message on a named channel -> 202 {messageId, status}
    POST   /v1/messages/batch      several at once (asynchronous) -> 202 {batchId, messages}
    GET    /v1/messages            the tenant's messages, newest last (cursor paged)
    GET    /v1/messages/{id}       status, and every transition with its time
    GET    /v1/channels            the channels the tenant may send on
    POST   /v1/webhooks            subscribe a URL to status codes -> 201, secret shown once
    GET    /v1/webhooks[/{id}]     list (cursor paged) / one
    DELETE /v1/webhooks/{id}       unsubscribe -> 204
    PUT    /v1/parties/{partyId}   a party's contact settings (channel, address)
    GET    /v1/parties[/{id}]      list / one;  DELETE /v1/parties/{id}

Every route needs a bearer token and sees only its tenant's data: another tenant's
message, webhook or party is "not found", never "forbidden", so ids leak nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Blueprint
from quart_schema import (
    document_headers,
    document_response,
    validate_querystring,
    validate_request,
)

from vumi_like.applications.messaging_api.v1_models import (
    Accepted,
    BatchAccepted,
    ChannelList,
    ChannelOut,
    MessageOut,
    MessagePage,
    NewWebhook,
    PageQuery,
    PartyOut,
    PartyPage,
    PartySettings,
    SendBatch,
    SendMessage,
    TransitionOut,
    WebhookOut,
    WebhookPage,
)
from vumi_like.errors import ProblemError
from vumi_like.messaging.webhooks import new_secret
from vumi_like.openapi.document import NoContent
from vumi_like.openapi.http import paged, problems
from vumi_like.openapi.idempotency import IdempotencyHeaders
from vumi_like.stores import MessageStatus, Party, RequestIds, StoredMessage, Webhook

if TYPE_CHECKING:
    from vumi_like.applications.messaging_api.worker import MessagingApi

__all__ = ["blueprint"]


def _time(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def message_out(message: StoredMessage, *, with_transitions: bool) -> MessageOut:
    transitions = None
    if with_transitions:
        transitions = [
            TransitionOut(
                status=t.status_after,
                previousStatus=t.status_before,
                eventType=t.event_type,
                at=_time(t.occurred_at),
                recordedAt=_time(t.recorded_at),
            )
            for t in message.transitions
        ]
    return MessageOut(
        messageId=message.message_id,
        direction=message.direction,
        channelName=message.channel,
        sender=message.sender,
        receiver=message.receiver,
        content=message.content,
        status=message.status,
        context=message.context,
        batchId=message.batch_id,
        partyId=message.party_id,
        origin=message.origin,
        issuer=message.issuer,
        createdAt=_time(message.created_at),
        updatedAt=_time(message.updated_at),
        transitions=transitions,
    )


def webhook_out(webhook: Webhook, *, with_secret: bool = False) -> WebhookOut:
    return WebhookOut(
        id=webhook.webhook_id,
        url=webhook.url,
        eventTypes=list(webhook.event_types),
        createdAt=_time(webhook.created_at),
        secret=webhook.secret if with_secret else None,
    )


def _not_found(what: str, code: str) -> ProblemError:
    return ProblemError(404, f"no such {what}", code=code)


def blueprint(api: MessagingApi) -> Blueprint:
    v1 = Blueprint("v1", __name__, url_prefix="/v1")

    @v1.post("/messages")
    @validate_request(SendMessage)
    @document_response(Accepted, 202)
    @problems(400, 401, 403, 404, 409, 413, 422, 503)
    @document_headers(IdempotencyHeaders)
    async def send_message(data: SendMessage) -> Any:
        principal = api.authenticate()
        draft = data.draft(*api.trace_headers())

        async def work(ids: RequestIds) -> tuple[Any, int]:
            _, [message_id] = await api.outbox.submit(
                principal.tenant, [draft], batch=False, ids=ids
            )
            return {"messageId": message_id, "status": MessageStatus.QUEUED.value}, 202

        return await api.answer_send(principal, work)

    @v1.post("/messages/batch")
    @validate_request(SendBatch)
    @document_response(BatchAccepted, 202)
    @problems(400, 401, 403, 404, 409, 413, 422, 503)
    @document_headers(IdempotencyHeaders)
    async def send_batch(data: SendBatch) -> Any:
        principal = api.authenticate()
        api.check_batch_size(len(data.messages))
        drafts = [message.draft(*api.trace_headers()) for message in data.messages]

        async def work(ids: RequestIds) -> tuple[Any, int]:
            batch_id, message_ids = await api.outbox.submit(
                principal.tenant, drafts, batch=True, asynchronous=True, ids=ids
            )
            queued = MessageStatus.QUEUED.value
            body = {
                "batchId": batch_id,
                "messages": [{"messageId": i, "status": queued} for i in message_ids],
            }
            return body, 202

        return await api.answer_send(principal, work)

    @v1.get("/messages")
    @validate_querystring(PageQuery)
    @document_response(MessagePage, 200)
    @problems(400, 401, 503)
    async def list_messages(query_args: PageQuery) -> Any:
        principal = api.authenticate()
        page = await paged(api.store.list_messages, principal.tenant, query=query_args)
        messages = [message_out(m, with_transitions=False) for m in page.items]
        return MessagePage(messages=messages, nextCursor=page.next_cursor), 200

    @v1.get("/messages/<message_id>")
    @document_response(MessageOut, 200)
    @problems(401, 404, 503)
    async def get_message(message_id: str) -> Any:
        principal = api.authenticate()
        message = await api.store.get_message(principal.tenant, message_id)
        if message is None:
            raise _not_found("message", "MESSAGE_NOT_FOUND")
        return message_out(message, with_transitions=True), 200

    @v1.get("/channels")
    @document_response(ChannelList, 200)
    @problems(401)
    async def list_channels() -> Any:
        principal = api.authenticate()
        channels = [
            ChannelOut(name=c.name, type=c.type, senders=c.senders[principal.tenant])
            for c in api.channels.for_tenant(principal.tenant)
        ]
        return ChannelList(channels=channels), 200

    @v1.post("/webhooks")
    @validate_request(NewWebhook)
    @document_response(WebhookOut, 201)
    @problems(400, 401, 409, 413, 503)
    async def add_webhook(data: NewWebhook) -> Any:
        principal = api.authenticate()
        existing = await api.store.list_webhooks(principal.tenant, limit=api.config.max_webhooks)
        if len(existing.items) >= api.config.max_webhooks:
            raise ProblemError(
                409,
                f"a tenant may have at most {api.config.max_webhooks} webhook subscriptions; "
                "delete one first",
                code="WEBHOOK_LIMIT_REACHED",
            )
        webhook = await api.store.add_webhook(
            principal.tenant, str(data.url), list(data.eventTypes), data.secret or new_secret()
        )
        return webhook_out(webhook, with_secret=True), 201

    @v1.get("/webhooks")
    @validate_querystring(PageQuery)
    @document_response(WebhookPage, 200)
    @problems(400, 401, 503)
    async def list_webhooks(query_args: PageQuery) -> Any:
        principal = api.authenticate()
        page = await paged(api.store.list_webhooks, principal.tenant, query=query_args)
        webhooks = [webhook_out(w) for w in page.items]
        return WebhookPage(webhooks=webhooks, nextCursor=page.next_cursor), 200

    @v1.get("/webhooks/<webhook_id>")
    @document_response(WebhookOut, 200)
    @problems(401, 404, 503)
    async def get_webhook(webhook_id: str) -> Any:
        principal = api.authenticate()
        webhook = await api.store.get_webhook(principal.tenant, webhook_id)
        if webhook is None:
            raise _not_found("webhook", "WEBHOOK_NOT_FOUND")
        return webhook_out(webhook), 200

    @v1.delete("/webhooks/<webhook_id>")
    @document_response(NoContent, 204)
    @problems(401, 404, 503)
    async def delete_webhook(webhook_id: str) -> Any:
        principal = api.authenticate()
        if not await api.store.delete_webhook(principal.tenant, webhook_id):
            raise _not_found("webhook", "WEBHOOK_NOT_FOUND")
        return "", 204

    @v1.put("/parties/<party_id>")
    @validate_request(PartySettings)
    @document_response(PartyOut, 200)
    @problems(400, 401, 404, 413, 503)
    async def set_party(party_id: str, data: PartySettings) -> Any:
        principal = api.authenticate()
        if api.channels.get(data.channel, principal.tenant) is None:
            raise _not_found("channel", "CHANNEL_NOT_FOUND")
        party = await api.store.set_party(principal.tenant, party_id, data.channel, data.address)
        return party_out(party), 200

    @v1.get("/parties")
    @validate_querystring(PageQuery)
    @document_response(PartyPage, 200)
    @problems(400, 401, 503)
    async def list_parties(query_args: PageQuery) -> Any:
        principal = api.authenticate()
        page = await paged(api.store.list_parties, principal.tenant, query=query_args)
        return PartyPage(parties=[party_out(p) for p in page.items], nextCursor=page.next_cursor)

    @v1.get("/parties/<party_id>")
    @document_response(PartyOut, 200)
    @problems(401, 404, 503)
    async def get_party(party_id: str) -> Any:
        principal = api.authenticate()
        party = await api.store.get_party(principal.tenant, party_id)
        if party is None:
            raise _not_found("party", "PARTY_NOT_FOUND")
        return party_out(party), 200

    @v1.delete("/parties/<party_id>")
    @document_response(NoContent, 204)
    @problems(401, 404, 503)
    async def delete_party(party_id: str) -> Any:
        principal = api.authenticate()
        if not await api.store.delete_party(principal.tenant, party_id):
            raise _not_found("party", "PARTY_NOT_FOUND")
        return "", 204

    return v1


def party_out(party: Party) -> PartyOut:
    return PartyOut(
        partyId=party.party_id,
        channel=party.channel,
        address=party.address,
        updatedAt=_time(party.updated_at),
    )
