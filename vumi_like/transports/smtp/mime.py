"""From an outbound ``Message`` to the e-mail that goes on the wire: ``build_email``.

The envelope gives the addresses and the plain-text body: ``from_addr`` is the sender,
``to_addr`` the one recipient, ``content`` the text. What e-mail has and SMS lacks comes
in ``helper_metadata["email"]``, an object with these keys, all optional:

* ``subject``: the Subject;
* ``html``: an HTML body, sent beside the text as ``multipart/alternative``;
* ``attachments``: a list of ``{"name", "content" (base64), "content_type"}``; the
  content type is guessed from the name when absent or null;
* ``sender_name``: the display name in ``From: "Name" <from_addr>``;
* ``reply_to``: an address for ``Reply-To``.

The shape follows what the body holds: the text alone is one ``text/plain`` part (an
HTML body alone, with ``content`` null, one ``text/html`` part); text and HTML are a
``multipart/alternative``; with attachments, a ``multipart/mixed`` holds that body first
and then each attachment, base64-encoded, named in its ``Content-Disposition``.

Promises about the result:

* It is 7-bit clean: text goes quoted-printable or base64 as its content needs, and
  non-ASCII subjects, names and file names are encoded (RFC 2047, RFC 2231). So no
  server extension (8BITMIME, SMTPUTF8) is needed to send it. The one thing that cannot
  be encoded so is a non-ASCII address, which is refused here rather than by a server.
* ``Message-ID`` is ``<message_id@domain>``, from the envelope's ``message_id``, so the
  retries of one envelope carry the same id and a receiver can tell them apart from a
  new message. ``domain`` is configured, or else the sender address's domain.
* ``Date`` is the envelope's ``timestamp``: when the message was made, not when a retry
  happened to send it.

Anything that cannot become a correct e-mail raises ``PermanentFailure`` with a reason
naming the field: a missing or malformed address, a header value with a line break
(which would let a client inject headers such as ``Bcc``), bad base64, an unknown key,
or a message larger than ``max_message_size``. Sending it again would fail the same way.

Building is CPU-bound for large attachments (tens of milliseconds per megabyte); a
caller sending them may run ``build_email`` with ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import mimetypes
import re
from datetime import UTC
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PositiveInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from vumi_like.config import ConfigModel
from vumi_like.messages import Message
from vumi_like.transports.outcomes import PermanentFailure
from vumi_like.validation import problem_line

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "EMAIL_POLICY",
    "Attachment",
    "EmailExtras",
    "MimeSettings",
    "build_email",
]

DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024

# SMTP line endings and line lengths; cte_type 7bit makes set_content pick
# quoted-printable or base64 for non-ASCII text instead of raw 8-bit.
EMAIL_POLICY = email.policy.SMTP.clone(cte_type="7bit")

_EXTRAS_KEY = "email"

# RFC 5322 atext plus ".": what may stand left of the "@" in a Message-ID.
_MSG_ID_LEFT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
# Dot-separated labels of letters, digits and inner hyphens (no address literals).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# RFC 2045 type "/" subtype, each a token.
_CONTENT_TYPE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)/([!#$%&'*+.^_`|~0-9A-Za-z-]+)")
# ASCII control characters but TAB: a CR or LF in a header value would start a new
# header, and the others have no business in one.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class MimeSettings(ConfigModel):
    """How envelopes become e-mails."""

    message_id_domain: str | None = Field(
        default=None,
        description="Domain in Message-ID headers (<message_id@domain>); "
        "by default the sender address's domain.",
    )
    max_message_size: PositiveInt = Field(
        default=DEFAULT_MAX_MESSAGE_SIZE,
        description="Largest e-mail, in bytes of its encoded body parts, that is sent; "
        "a larger one is refused for good.",
    )

    @field_validator("message_id_domain")
    @classmethod
    def _a_domain(cls, domain: str | None) -> str | None:
        if domain is not None and not _DOMAIN.fullmatch(domain):
            raise ValueError("should be a domain name such as 'mail.example.com'")
        return domain


def _header_text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain line breaks or control characters")
    return value


def _base64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("should be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None


def _content_type(value: str) -> str:
    match = _CONTENT_TYPE.fullmatch(value)
    if match is None:
        raise ValueError("should be a MIME type like 'application/pdf'")
    if match[1].lower() in ("multipart", "message"):
        raise ValueError("may not be multipart/* or message/* (send those as bytes)")
    return value.lower()


HeaderText = Annotated[StrictStr, AfterValidator(_header_text)]


class Attachment(BaseModel):
    """One attachment: its file name, its bytes (base64 on the wire) and its type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[StrictStr, Field(min_length=1), AfterValidator(_header_text)]
    content: Annotated[bytes, PlainValidator(_base64)]
    content_type: Annotated[StrictStr, AfterValidator(_content_type)] | None = None

    def mime_type(self) -> tuple[str, str]:
        """``(maintype, subtype)``: the given type, else guessed from the name."""
        guessed, _ = mimetypes.guess_type(self.name, strict=False)
        maintype, _, subtype = (self.content_type or guessed or "").partition("/")
        if not subtype or maintype in ("multipart", "message"):
            return "application", "octet-stream"
        return maintype, subtype


class EmailExtras(BaseModel):
    """``helper_metadata["email"]``: what an e-mail has beyond addresses and text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: HeaderText | None = None
    html: StrictStr | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    sender_name: HeaderText | None = None
    reply_to: StrictStr | None = None

    @classmethod
    def from_message(cls, message: Message) -> EmailExtras:
        """The extras of ``message``; ``PermanentFailure`` naming the bad field if any."""
        raw = message.helper_metadata.get(_EXTRAS_KEY)
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise PermanentFailure(f"helper_metadata.{_EXTRAS_KEY}: should be an object")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            where = ("helper_metadata", _EXTRAS_KEY)
            problems = "; ".join(
                problem_line({**error, "loc": (*where, *error["loc"])})
                for error in exc.errors(include_url=False)
            )
            raise PermanentFailure(problems) from None


def build_email(message: Message, settings: MimeSettings | None = None) -> EmailMessage:
    """The e-mail for ``message``, as the module docstring describes.

    ``PermanentFailure`` if it cannot be built or is larger than
    ``settings.max_message_size``.
    """
    settings = settings or MimeSettings()
    extras = EmailExtras.from_message(message)
    sender = _mailbox(message.from_addr, "from_addr")
    recipient = _mailbox(message.to_addr, "to_addr")
    reply_to = None
    if extras.reply_to is not None:
        reply_to = _mailbox(extras.reply_to, f"helper_metadata.{_EXTRAS_KEY}.reply_to")

    mail = EmailMessage(policy=EMAIL_POLICY)
    mail["From"] = Address(display_name=extras.sender_name or "", addr_spec=sender.addr_spec)
    mail["To"] = recipient
    if extras.subject is not None:
        mail["Subject"] = extras.subject
    if reply_to is not None:
        mail["Reply-To"] = reply_to
    mail["Date"] = format_datetime(message.timestamp.replace(tzinfo=UTC))
    mail["Message-ID"] = _message_id(message, settings.message_id_domain or sender.domain)
    mail["MIME-Version"] = "1.0"
    _set_body(mail, message.content, extras)

    size = _encoded_size(mail)
    if size > settings.max_message_size:
        raise PermanentFailure(
            f"e-mail too large: {size} bytes encoded, the limit is {settings.max_message_size}"
        )
    return mail


def _mailbox(value: str, field: str) -> Address:
    if not value.strip():
        raise PermanentFailure(f"{field}: an e-mail address is required")
    if not value.isascii():
        raise PermanentFailure(
            f"{field}: non-ASCII addresses need SMTPUTF8, which is not supported"
        )
    if _CONTROL.search(value):
        raise PermanentFailure(f"{field}: must not contain line breaks or control characters")
    try:
        address = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError):
        # IndexError: the parser's answer to "user@" in some Python versions.
        address = None
    if address is None or not address.username or not _DOMAIN.fullmatch(address.domain):
        raise PermanentFailure(f"{field}: not an e-mail address")
    return address


def _message_id(message: Message, domain: str) -> str:
    if not _MSG_ID_LEFT.fullmatch(message.message_id):
        raise PermanentFailure("message_id: cannot be used in a Message-ID header")
    return f"<{message.message_id}@{domain}>"


def _set_body(mail: EmailMessage, text: str | None, extras: EmailExtras) -> None:
    bodies: list[tuple[str, str]] = []  # (content, subtype)
    if text is not None or extras.html is None:
        bodies.append((text or "", "plain"))
    if extras.html is not None:
        bodies.append((extras.html, "html"))

    if len(bodies) == 1 and not extras.attachments:
        content, subtype = bodies[0]
        mail.set_content(content, subtype=subtype)
        return
    texts = [_text_part(content, subtype) for content, subtype in bodies]
    if not extras.attachments:
        _fill(mail, "alternative", texts)
        return
    body = (
        texts[0] if len(texts) == 1 else _fill(MIMEPart(policy=EMAIL_POLICY), "alternative", texts)
    )
    _fill(mail, "mixed", [body, *map(_attachment_part, extras.attachments)])


def _fill(part: MIMEPart, subtype: str, children: list[MIMEPart]) -> MIMEPart:
    """``part`` made ``multipart/<subtype>`` holding ``children``."""
    (part.make_alternative if subtype == "alternative" else part.make_mixed)()
    for child in children:
        part.attach(child)
    return part


def _text_part(text: str, subtype: str) -> MIMEPart:
    # MIMEPart, not EmailMessage: a body part carries no MIME-Version header.
    part = MIMEPart(policy=EMAIL_POLICY)
    part.set_content(text, subtype=subtype)
    return part


def _attachment_part(attachment: Attachment) -> MIMEPart:
    maintype, subtype = attachment.mime_type()
    part = MIMEPart(policy=EMAIL_POLICY)
    part.set_content(attachment.content, maintype, subtype, cte="base64", filename=attachment.name)
    return part


def _encoded_size(mail: EmailMessage) -> int:
    """Bytes of the encoded leaf parts: within a few hundred bytes of headers of the
    size on the wire, without serialising the whole e-mail (as slow as building it)."""
    size = 0
    for part in mail.walk():
        if not part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, str):
                size += len(payload) + payload.count("\n")  # LF becomes CRLF
    return size
