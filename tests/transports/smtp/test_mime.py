"""``build_email``: the shape of the e-mail for each kind of body, and every envelope
that cannot become a correct e-mail refused for good with a reason naming the field."""

from __future__ import annotations

import base64
import email.policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from pydantic import ValidationError

from tests.transports.smtp.conftest import outbound
from vumi_like.transports.outcomes import PermanentFailure
from vumi_like.transports.smtp.mime import MimeSettings, build_email


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def built(content: str | None = "Hello", **extras: Any) -> EmailMessage:
    """The e-mail as a receiver parses it."""
    mail = build_email(outbound(content=content, helper_metadata={"email": extras}))
    raw = mail.as_bytes()
    assert raw.isascii()  # no server extension needed
    return BytesParser(policy=email.policy.default).parsebytes(raw)


def parts(mail: EmailMessage) -> list[str]:
    return [part.get_content_type() for part in mail.walk()]


def test_text_alone_is_one_text_part() -> None:
    message = outbound(content="Hello")
    mail = BytesParser(policy=email.policy.default).parsebytes(build_email(message).as_bytes())
    assert parts(mail) == ["text/plain"]
    assert mail.get_content() == "Hello\r\n"
    assert mail["Message-ID"] == f"<{message.message_id}@example.org>"  # the sender's domain
    assert mail["MIME-Version"] == "1.0"
    assert mail["Subject"] is None
    assert mail["Reply-To"] is None
    assert str(mail["From"]) == "alice@example.org"


def test_html_alone_is_one_html_part() -> None:
    mail = built(content=None, html="<p>Hi</p>")
    assert parts(mail) == ["text/html"]
    assert mail.get_content() == "<p>Hi</p>\r\n"


def test_no_body_at_all_is_an_empty_text_part() -> None:
    mail = built(content=None)
    assert parts(mail) == ["text/plain"]
    assert mail.get_content() == "\r\n"


def test_text_and_html_are_alternatives() -> None:
    mail = built(html="<p>Hello</p>")
    assert parts(mail) == ["multipart/alternative", "text/plain", "text/html"]
    assert [part.get("MIME-Version") for part in mail.iter_parts()] == [None, None]


def test_attachments_follow_the_body_in_a_mixed_part() -> None:
    mail = built(attachments=[{"name": "a.png", "content": b64(b"\x89PNG")}])
    assert parts(mail) == ["multipart/mixed", "text/plain", "image/png"]
    _, image = mail.iter_parts()
    assert image.get_content() == b"\x89PNG"


@pytest.mark.parametrize(
    ("attachment", "content_type"),
    [
        ({"name": "report.pdf"}, "application/pdf"),
        ({"name": "report.pdf", "content_type": None}, "application/pdf"),
        ({"name": "data", "content_type": "Text/CSV"}, "text/csv"),
        ({"name": "data.unknown-extension"}, "application/octet-stream"),
        ({"name": "forwarded.eml"}, "application/octet-stream"),  # not message/rfc822
    ],
)
def test_attachment_type_is_given_or_guessed(
    attachment: dict[str, Any], content_type: str
) -> None:
    mail = built(attachments=[{"content": b64(b"x"), **attachment}])
    assert parts(mail)[-1] == content_type


def test_configured_message_id_domain() -> None:
    message = outbound()
    mail = build_email(message, MimeSettings(message_id_domain="ids.example.net"))
    assert mail["Message-ID"] == f"<{message.message_id}@ids.example.net>"


def test_message_id_domain_must_be_a_domain() -> None:
    with pytest.raises(ValidationError, match="should be a domain name"):
        MimeSettings(message_id_domain="not a domain>")


@pytest.mark.parametrize(
    ("extras", "reason"),
    [
        (
            {"subject": "Hi\r\nBcc: everyone@example.com"},
            "helper_metadata.email.subject: must not contain line breaks or control characters",
        ),
        (
            {"sender_name": "Alice\nBcc: everyone@example.com"},
            "helper_metadata.email.sender_name: must not contain line breaks",
        ),
        (
            {"reply_to": "a@example.com\r\nBcc: everyone@example.com"},
            "helper_metadata.email.reply_to: must not contain line breaks",
        ),
        ({"reply_to": "not an address"}, "helper_metadata.email.reply_to: not an e-mail address"),
        (
            {"attachments": [{"name": "a.pdf", "content": "not base64!"}]},
            "helper_metadata.email.attachments.0.content: is not valid base64",
        ),
        (
            {"attachments": [{"name": "a.pdf", "content": 12}]},
            "helper_metadata.email.attachments.0.content: should be base64 text",
        ),
        (
            {"attachments": [{"name": "a.pdf\r\nX: y", "content": ""}]},
            "helper_metadata.email.attachments.0.name: must not contain line breaks",
        ),
        (
            {"attachments": [{"name": "", "content": ""}]},
            "helper_metadata.email.attachments.0.name: string should have at least 1 character",
        ),
        (
            {"attachments": [{"name": "a", "content": "", "content_type": "pdf"}]},
            "helper_metadata.email.attachments.0.content_type: should be a MIME type",
        ),
        (
            {"attachments": [{"name": "a", "content": "", "content_type": "multipart/mixed"}]},
            "helper_metadata.email.attachments.0.content_type: may not be multipart/*",
        ),
        (
            {"attachments": [{"content": ""}]},
            "helper_metadata.email.attachments.0.name: is required",
        ),
        ({"cc": "x@example.com"}, "helper_metadata.email.cc: extra inputs are not permitted"),
        ({"subject": 5}, "helper_metadata.email.subject: should be a valid string"),
    ],
)
def test_bad_extras_are_refused_for_good(extras: dict[str, Any], reason: str) -> None:
    with pytest.raises(PermanentFailure) as failure:
        build_email(outbound(helper_metadata={"email": extras}))
    assert failure.value.reason.startswith(reason), failure.value.reason


def test_extras_that_are_not_an_object_are_refused() -> None:
    with pytest.raises(PermanentFailure, match=r"helper_metadata.email: should be an object"):
        build_email(outbound(helper_metadata={"email": ["subject"]}))


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("", "an e-mail address is required"),
        ("   ", "an e-mail address is required"),
        ("bob", "not an e-mail address"),
        ("bob@", "not an e-mail address"),
        ("@example.com", "not an e-mail address"),
        ("bob@-example.com", "not an e-mail address"),
        ("bob@example..com", "not an e-mail address"),
        ("bob@[192.0.2.1]", "not an e-mail address"),
        ("Bob <bob@example.com>", "not an e-mail address"),
        ("bob@example.com, eve@example.com", "not an e-mail address"),
        (
            "bob@example.com\r\nBcc: eve@example.com",
            "must not contain line breaks or control characters",
        ),
        ("bøb@example.com", "non-ASCII addresses need SMTPUTF8, which is not supported"),
        ("bob@exämple.com", "non-ASCII addresses need SMTPUTF8, which is not supported"),
    ],
)
@pytest.mark.parametrize("field", ["to_addr", "from_addr"])
def test_bad_addresses_are_refused_for_good(field: str, address: str, problem: str) -> None:
    with pytest.raises(PermanentFailure) as failure:
        build_email(outbound(**{field: address}))
    assert failure.value.reason == f"{field}: {problem}"


def test_message_id_unfit_for_a_header_is_refused() -> None:
    with pytest.raises(PermanentFailure, match="message_id: cannot be used in a Message-ID"):
        build_email(outbound(message_id="abc def>"))


def test_mail_over_the_size_limit_is_refused_for_good() -> None:
    settings = MimeSettings(max_message_size=2000)
    small = outbound(
        helper_metadata={"email": {"attachments": [{"name": "a", "content": b64(b"x" * 1000)}]}}
    )
    large = outbound(
        helper_metadata={"email": {"attachments": [{"name": "a", "content": b64(b"x" * 1600)}]}}
    )
    build_email(small, settings)
    with pytest.raises(
        PermanentFailure, match=r"e-mail too large: 2\d\d\d bytes encoded, the limit is 2000"
    ):
        build_email(large, settings)


def test_size_limit_is_25_megabytes_by_default() -> None:
    assert MimeSettings().max_message_size == 25 * 1024 * 1024
