"""The /v1 API's request and response models: requests refuse unknown fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from vumi_like.outbound.outbox import Draft

WebhookEvent = Literal[
    "QUEUED",
    "SENT",
    "DELIVERY_RETRIED",
    "DELIVERED",
    "DELIVERY_FAILED",
    "NO_FEEDBACK_SETTINGS_FOUND",
    "MESSAGE_RECEIVED",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Attachment(_Strict):
    name: str = Field(min_length=1, max_length=255)
    content: str = Field(description="The file, base64")
    contentType: str | None = None


class Content(_Strict):
    text: str | None = None
    subject: str | None = None
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)


class SendMessage(_Strict):
    channel: str = Field(min_length=1, description="A channel name from GET /v1/channels")
    receiver: str = Field(min_length=1, max_length=320, description="Address to send to")
    sender: str | None = Field(
        default=None, max_length=320, description="One of the tenant's senders on the channel"
    )
    content: str | Content = Field(description="Text, or {text, subject, html, attachments}")
    context: dict[str, Any] | None = Field(
        default=None, description="Any JSON object; echoed in every webhook about the message"
    )

    def draft(self, origin: str | None, issuer: str | None) -> Draft:
        content = self.content if isinstance(self.content, Content) else Content(text=self.content)
        payload = content.model_dump(exclude={"text"}, exclude_none=True, exclude_defaults=True)
        return Draft(
            channel=self.channel,
            receiver=self.receiver,
            sender=self.sender,
            content=content.text,
            payload=payload,
            context=self.context or {},
            origin=origin,
            issuer=issuer,
        )


class SendBatch(_Strict):
    messages: list[SendMessage] = Field(min_length=1)


class Accepted(BaseModel):
    messageId: str
    status: str


class BatchAccepted(BaseModel):
    batchId: str
    messages: list[Accepted]


class TransitionOut(BaseModel):
    status: str
    previousStatus: str | None
    eventType: str
    at: str
    recordedAt: str


class MessageOut(BaseModel):
    messageId: str
    direction: str
    channelName: str
    sender: str
    receiver: str
    content: str | None
    status: str
    context: dict[str, Any]
    batchId: str | None
    partyId: str | None
    origin: str | None
    issuer: str | None
    createdAt: str
    updatedAt: str
    transitions: list[TransitionOut] | None = None


class MessagePage(BaseModel):
    messages: list[MessageOut]
    nextCursor: str | None


class ChannelOut(BaseModel):
    name: str
    type: str
    senders: list[str]


class ChannelList(BaseModel):
    channels: list[ChannelOut]


class NewWebhook(_Strict):
    url: AnyHttpUrl
    eventTypes: list[WebhookEvent] = Field(
        default_factory=list, description="Status codes to post; empty: all of them"
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="Signing secret; default: generated",
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    eventTypes: list[str]
    createdAt: str
    secret: str | None = Field(default=None, description="Only in the answer to its creation")


class WebhookPage(BaseModel):
    webhooks: list[WebhookOut]
    nextCursor: str | None


class PartySettings(_Strict):
    channel: str = Field(min_length=1)
    address: str = Field(min_length=1, max_length=320)


class PartyOut(BaseModel):
    partyId: str
    channel: str
    address: str
    updatedAt: str


class PartyPage(BaseModel):
    parties: list[PartyOut]
    nextCursor: str | None


class PageQuery(_Strict):
    cursor: str | None = None
    limit: int | None = Field(default=None, ge=1, le=100)
