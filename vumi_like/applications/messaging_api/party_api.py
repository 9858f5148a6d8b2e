"""The per-type API (seed 003): SMS, e-mail and web messages to parties, and their history.

    POST /sms, /email, /webmessage     one message -> 200 {messageId}
    POST /messages                     one message per party, by the party's contact
                                       settings -> 200 {batchId, messageIds}
    POST /sms/batch, /email/batch      one text to many recipients, asynchronous
                                       -> 202 {batchId, messageIds}; follow with /status
    GET  /status/{messageId}           -> {messageId, status}
    GET  /batchStatus/{batchId}        -> {messageStatuses: [...]}
    GET  /conversationHistory/{partyId}?fromDate&toDate   every message with the party

The schemas are seed 003's, as written: its field names, its required fields, unknown
fields ignored (it does not forbid them). Two choices where it is silent or local:
``mobileNumber`` must match ``sms_number_pattern`` (E.164 by default; seed 003's
deployment used ``^\\+467[02369]\\d{7}$``), and the two batch endpoints, which it names
but does not specify, take ``recipients`` beside one message.

Statuses are the seed's codes, mapped from ours (``vumi_like.stores.status``). Every
sending endpoint stores the ``x-origin`` (calling system) and ``x-issuer`` (user)
headers with the message; history shows them. A message is sent on the tenant's first
channel of the right type (``sms``, ``email``, ``web``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from quart import Blueprint, request
from quart_schema import (
    document_headers,
    document_response,
    validate_querystring,
    validate_request,
)

from vumi_like.applications.messaging_api.party_models import (
    Attachment,
    BatchStatusResponse,
    Email,
    EmailBatchRequest,
    EmailRequest,
    HistoryQuery,
    HistoryResponse,
    Message,
    MessageRequest,
    MessageResponse,
    MessagesResponse,
    MessageStatusResponse,
    Sender,
    SmsBatchRequest,
    SmsRequest,
    WebMessageRequest,
    _Addressed,
)
from vumi_like.errors import ProblemError
from vumi_like.openapi.http import paged, problems
from vumi_like.openapi.idempotency import IdempotencyHeaders
from vumi_like.outbound.outbox import Draft
from vumi_like.stores import RequestIds, StoredMessage, legacy_status

if TYPE_CHECKING:
    from vumi_like.applications.messaging_api.worker import MessagingApi

__all__ = ["blueprint"]


def _party_payload(request: _Addressed) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if request.headers:
        payload["headers"] = [header.model_dump() for header in request.headers]
    if request.party and request.party.externalReferences:
        payload["externalReferences"] = [
            reference.model_dump() for reference in request.party.externalReferences
        ]
    return payload


def _party_id(request: _Addressed) -> str | None:
    return request.party.partyId if request.party else None


def _email_payload(
    subject: str,
    html: str | None,
    sender: Email | None,
    attachments: list[Attachment] | None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"subject": subject}
    if html is not None:
        payload["html_base64"] = html
    if sender is not None:
        payload["sender_name"] = sender.name
        if sender.replyTo:
            payload["reply_to"] = sender.replyTo
    if attachments:
        payload["attachments"] = [a.model_dump(exclude_none=True) for a in attachments]
    return payload


def history_item(message: StoredMessage) -> HistoryResponse:
    content: dict[str, Any] = {"message": message.content}
    for key in ("subject", "headers", "externalReferences"):
        if key in message.payload:
            content[key] = message.payload[key]
    return HistoryResponse(
        messageId=message.message_id,
        messageType=message.message_type,  # type: ignore[arg-type]
        direction=message.direction.value,
        status=legacy_status(message.status).value,
        content=content,
        timestamp=message.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        origin=message.origin,
        issuer=message.issuer,
    )


def blueprint(api: MessagingApi) -> Blueprint:
    typed = Blueprint("party_api", __name__)
    number = re.compile(api.config.sms_number_pattern)

    def channel_of(tenant: str, channel_type: str) -> str:
        channel = api.channels.of_type(channel_type, tenant)
        if channel is None:
            raise ProblemError(
                404,
                f"this tenant has no {channel_type} channel",
                code="CHANNEL_NOT_FOUND",
            )
        return channel.name

    def check_number(mobile_number: str, where: str) -> None:
        if not number.fullmatch(mobile_number):
            raise ProblemError(
                400,
                f"{where}: should match {api.config.sms_number_pattern}",
                code="VALIDATION_FAILED",
            )

    async def send_one(draft: Draft) -> Any:
        principal = api.authenticate()

        async def work(ids: RequestIds) -> tuple[Any, int]:
            _, [message_id] = await api.outbox.submit(
                principal.tenant, [draft], batch=False, ids=ids
            )
            return {"messageId": message_id}, 200

        return await api.answer_send(principal, work)

    async def send_many(drafts: list[Draft], *, asynchronous: bool) -> Any:
        principal = api.authenticate()
        api.check_batch_size(len(drafts))

        async def work(ids: RequestIds) -> tuple[Any, int]:
            batch_id, message_ids = await api.outbox.submit(
                principal.tenant, drafts, batch=True, asynchronous=asynchronous, ids=ids
            )
            status = 202 if asynchronous else 200
            return {"batchId": batch_id, "messageIds": message_ids}, status

        return await api.answer_send(principal, work)

    @typed.post("/sms")
    @validate_request(SmsRequest)
    @document_response(MessageResponse, 200)
    @problems(400, 401, 403, 404, 409, 413, 422, 503)
    @document_headers(IdempotencyHeaders)
    async def send_sms(data: SmsRequest) -> Any:
        principal = api.authenticate()
        check_number(data.mobileNumber, "mobileNumber")
        origin, issuer = api.trace_headers()
        return await send_one(
            Draft(
                channel=channel_of(principal.tenant, "sms"),
                receiver=data.mobileNumber,
                sender=data.sender.name if data.sender else None,
                content=data.message,
                message_type="SMS",
                payload=_party_payload(data),
                party_id=_party_id(data),
                origin=origin,
                issuer=issuer,
            )
        )

    @typed.post("/email")
    @validate_request(EmailRequest)
    @document_response(MessageResponse, 200)
    @problems(400, 401, 403, 404, 409, 413, 422, 503)
    @document_headers(IdempotencyHeaders)
    async def send_email(data: EmailRequest) -> Any:
        principal = api.authenticate()
        origin, issuer = api.trace_headers()
        return await send_one(
            Draft(
                channel=channel_of(principal.tenant, "email"),
                receiver=data.emailAddress,
                sender=data.sender.address if data.sender else None,
                content=data.message,
                message_type="EMAIL",
                payload={
                    **_party_payload(data),
                    **_email_payload(
                        data.subject, data.htmlMessage, data.sender, data.attachments
                    ),
                },
                party_id=_party_id(data),
                origin=origin,
                issuer=issuer,
            )
        )

    @typed.post("/webmessage")
    @validate_request(WebMessageRequest)
    @document_response(MessageResponse, 200)
    @problems(400, 401, 403, 404, 409, 413, 422, 503)
    @document_headers(IdempotencyHeaders)
    async def send_web_message(data: WebMessageRequest) -> Any:
        principal = api.authenticate()
        party_id = _party_id(data)
        if not party_id:
            raise ProblemError(
                400, "party.partyId: is required for a web message", code="VALIDATION_FAILED"
            )
        origin, issuer = api.trace_headers()
        return await send_one(
            Draft(
                channel=channel_of(principal.tenant, "web"),
                receiver=party_id,
                content=data.message,
                message_type="WEB_MESSAGE",
                payload=_party_payload(data),
                party_id=party_id,
                origin=origin,
                issuer=issuer,
            )
        )

    @typed.post("/messages")
    @validate_request(MessageRequest)
    @document_response(MessagesResponse, 200)
    @problems(400, 401, 403, 404, 409, 413, 422, 503)
    @document_headers(IdempotencyHeaders)
    async def send_to_parties(data: MessageRequest) -> Any:
        principal = api.authenticate()
        api.check_batch_size(len(data.messages))
        origin, issuer = api.trace_headers()
        drafts = []
        for index, message in enumerate(data.messages):
            party_id = _party_id(message)
            if not party_id:
                raise ProblemError(
                    400,
                    f"messages.{index}.party.partyId: is required",
                    code="VALIDATION_FAILED",
                )
            drafts.append(await _party_draft(principal.tenant, party_id, message, origin, issuer))
        return await send_many(drafts, asynchronous=False)

    async def _party_draft(
        tenant: str, party_id: str, message: Message, origin: str | None, issuer: str | None
    ) -> Draft:
        settings = await api.store.get_party(tenant, party_id)
        channel = api.channels.get(settings.channel, tenant) if settings else None
        common: dict[str, Any] = {
            "content": message.message,
            "payload": _party_payload(message),
            "party_id": party_id,
            "origin": origin,
            "issuer": issuer,
        }
        if settings is None or channel is None:
            # Nobody to send it to: recorded, and its status says why.
            return Draft(
                channel="", receiver="", message_type="MESSAGE", unreachable=True, **common
            )
        sender = message.sender or Sender()
        if channel.type == "email":
            common["payload"].update(
                _email_payload(message.subject or "", None, sender.email, None)
            )
            chosen = sender.email.address if sender.email else None
            kind = "EMAIL"
        elif channel.type == "sms":
            chosen, kind = (sender.sms.name if sender.sms else None), "SMS"
        else:
            chosen, kind = None, "MESSAGE"
        return Draft(
            channel=channel.name,
            receiver=settings.address,
            sender=chosen,
            message_type=kind,
            **common,
        )

    @typed.post("/sms/batch")
    @validate_request(SmsBatchRequest)
    @document_response(MessagesResponse, 202)
    @problems(400, 401, 403, 404, 409, 413, 422, 503)
    @document_headers(IdempotencyHeaders)
    async def send_sms_batch(data: SmsBatchRequest) -> Any:
        principal = api.authenticate()
        channel = channel_of(principal.tenant, "sms")
        origin, issuer = api.trace_headers()
        drafts = []
        for index, recipient in enumerate(data.recipients):
            check_number(recipient.mobileNumber, f"recipients.{index}.mobileNumber")
            drafts.append(
                Draft(
                    channel=channel,
                    receiver=recipient.mobileNumber,
                    sender=data.sender.name if data.sender else None,
                    content=data.message,
                    message_type="SMS",
                    party_id=recipient.party.partyId if recipient.party else None,
                    origin=origin,
                    issuer=issuer,
                )
            )
        return await send_many(drafts, asynchronous=True)

    @typed.post("/email/batch")
    @validate_request(EmailBatchRequest)
    @document_response(MessagesResponse, 202)
    @problems(400, 401, 403, 404, 409, 413, 422, 503)
    @document_headers(IdempotencyHeaders)
    async def send_email_batch(data: EmailBatchRequest) -> Any:
        principal = api.authenticate()
        channel = channel_of(principal.tenant, "email")
        origin, issuer = api.trace_headers()
        payload = _email_payload(data.subject, data.htmlMessage, data.sender, data.attachments)
        drafts = [
            Draft(
                channel=channel,
                receiver=recipient.emailAddress,
                sender=data.sender.address if data.sender else None,
                content=data.message,
                message_type="EMAIL",
                payload=payload,
                party_id=recipient.party.partyId if recipient.party else None,
                origin=origin,
                issuer=issuer,
            )
            for recipient in data.recipients
        ]
        return await send_many(drafts, asynchronous=True)

    @typed.get("/status/<message_id>")
    @document_response(MessageStatusResponse, 200)
    @problems(401, 404, 503)
    async def message_status(message_id: str) -> Any:
        principal = api.authenticate()
        message = await api.store.get_message(principal.tenant, message_id)
        if message is None:
            raise ProblemError(404, "no such message", code="MESSAGE_NOT_FOUND")
        status = legacy_status(message.status).value
        return MessageStatusResponse(messageId=message_id, status=status), 200  # type: ignore[arg-type]

    @typed.get("/batchStatus/<batch_id>")
    @document_response(BatchStatusResponse, 200)
    @problems(401, 404, 503)
    async def batch_status(batch_id: str) -> Any:
        principal = api.authenticate()
        statuses = await api.store.batch_statuses(principal.tenant, batch_id)
        if statuses is None:
            raise ProblemError(404, "no such batch", code="BATCH_NOT_FOUND")
        return BatchStatusResponse(
            messageStatuses=[
                MessageStatusResponse(messageId=i, status=legacy_status(s).value)
                for i, s in statuses
            ]
        ), 200

    @typed.get("/conversationHistory/<party_id>")
    @validate_querystring(HistoryQuery)
    @document_response(list[HistoryResponse], 200)
    @problems(400, 401, 503)
    async def conversation_history(party_id: str, query_args: HistoryQuery) -> Any:
        principal = api.authenticate()
        page = await paged(
            api.store.history,
            principal.tenant,
            party_id,
            from_date=query_args.fromDate,
            to_date=query_args.toDate,
            query=query_args,
        )
        items = [history_item(message).model_dump() for message in page.items]
        headers = {}
        if page.next_cursor:
            # The same query, next page: dates and limit carry over.
            query = urlencode({**request.args.to_dict(), "cursor": page.next_cursor})
            headers["Link"] = f'<{request.path}?{query}>; rel="next"'
            headers["X-Next-Cursor"] = page.next_cursor
        return items, 200, headers

    return typed
