"""Seed 003's request and response schemas, as written (unknown fields are ignored)."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, Field

LegacyCode = Literal[
    "AWAITING_FEEDBACK",
    "PENDING",
    "SENT",
    "FAILED",
    "NO_FEEDBACK_SETTINGS_FOUND",
    "NO_FEEDBACK_WANTED",
]


class ExternalReference(BaseModel):
    key: str
    value: str


class Header(BaseModel):
    name: str
    values: list[str]


class Party(BaseModel):
    partyId: str | None = None
    externalReferences: list[ExternalReference] | None = None


class Sms(BaseModel):
    name: str = Field(max_length=11, description="The sender of the SMS")


class Email(BaseModel):
    name: str = Field(description="The sender of the e-mail")
    address: str = Field(description="Sender e-mail address")
    replyTo: str | None = None


class Sender(BaseModel):
    sms: Sms | None = None
    email: Email | None = None


class Attachment(BaseModel):
    content: str = Field(description="The attachment (file) content as a BASE64-encoded string")
    name: str
    contentType: str | None = None


class _Addressed(BaseModel):
    party: Party | None = None
    headers: list[Header] | None = None


class SmsRequest(_Addressed):
    sender: Sms | None = None
    mobileNumber: str
    message: str


class EmailRequest(_Addressed):
    emailAddress: str
    subject: str
    message: str | None = None
    htmlMessage: str | None = Field(default=None, description="E-mail HTML body (BASE64)")
    sender: Email | None = None
    attachments: list[Attachment] | None = None


class WebMessageRequest(_Addressed):
    message: str


class Message(_Addressed):
    sender: Sender | None = None
    subject: str | None = None
    message: str


class MessageRequest(BaseModel):
    messages: list[Message] = Field(min_length=1)


class SmsRecipient(BaseModel):
    mobileNumber: str
    party: Party | None = None


class SmsBatchRequest(BaseModel):
    sender: Sms | None = None
    message: str
    recipients: list[SmsRecipient] = Field(min_length=1)


class EmailRecipient(BaseModel):
    emailAddress: str
    party: Party | None = None


class EmailBatchRequest(BaseModel):
    sender: Email | None = None
    subject: str
    message: str | None = None
    htmlMessage: str | None = None
    attachments: list[Attachment] | None = None
    recipients: list[EmailRecipient] = Field(min_length=1)


class MessageResponse(BaseModel):
    messageId: str


class MessagesResponse(BaseModel):
    batchId: str
    messageIds: list[str]


class MessageStatusResponse(BaseModel):
    messageId: str
    status: LegacyCode


class BatchStatusResponse(BaseModel):
    messageStatuses: list[MessageStatusResponse]


class HistoryResponse(BaseModel):
    messageId: str
    messageType: Literal["MESSAGE", "EMAIL", "SMS", "WEB_MESSAGE"]
    direction: Literal["outbound", "inbound"]
    status: LegacyCode
    content: dict[str, Any]
    timestamp: str
    origin: str | None
    issuer: str | None


class HistoryQuery(BaseModel):
    fromDate: date | None = Field(default=None, description="Format: yyyy-MM-dd (ISO8601)")
    toDate: date | None = Field(default=None, description="Format: yyyy-MM-dd (ISO8601)")
    cursor: str | None = None
    limit: int | None = Field(default=None, ge=1, le=100)
