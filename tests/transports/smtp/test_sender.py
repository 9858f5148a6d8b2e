"""``SmtpSender`` against aiosmtpd (a real SMTP server) and, for what no server does on
purpose, scripted peers: what arrives, the outcome of each failure, TLS, AUTH, and the
reuse of sessions."""

from __future__ import annotations

import base64
import email.policy
import ssl
from collections.abc import Callable
from datetime import UTC
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
import structlog
import trio
from pydantic import SecretStr

from tests.transports.smtp.conftest import OpenSender, StartServer, outbound, settings_for
from tests.transports.smtp.servers import (
    PASSWORD,
    USERNAME,
    Recorder,
    ScriptedPeer,
    SmtpServer,
    authenticate,
    serve_script,
)
from vumi_like.config import ConfigError
from vumi_like.transports.outcomes import (
    PermanentFailure,
    ProviderError,
    ProviderUnavailable,
    TemporaryFailure,
)
from vumi_like.transports.smtp.mime import MimeSettings, build_email
from vumi_like.transports.smtp.sender import SmtpSender, SmtpSettings, queue_id_from_reply

PDF = b"%PDF-1.4 not really a PDF \x00\xff\r\n.\r\nstill the PDF"


def plain_mail(to_addr: str = "bob@example.com") -> EmailMessage:
    return build_email(outbound(to_addr=to_addr))


async def failure_of(sender: SmtpSender, mail: EmailMessage, expected: type[ProviderError]) -> str:
    """Send ``mail``, expecting exactly ``expected`` and one log line; the reason."""
    with structlog.testing.capture_logs() as logs, pytest.raises(ProviderError) as failure:
        with trio.fail_after(10):
            await sender.send(mail)
    assert type(failure.value) is expected, failure.value
    lines = [line for line in logs if line["event"] == "smtp send failed"]
    assert len(lines) == 1, logs
    assert lines[0]["outcome"] == expected.__name__
    assert lines[0]["message_id"] == mail["Message-ID"]
    return failure.value.reason


async def wait_until(server: SmtpServer, predicate: Callable[[Recorder], bool]) -> None:
    await trio.to_thread.run_sync(server.recorder.wait_for, predicate)


# -- what arrives -------------------------------------------------------------------------


async def test_mail_arrives_part_by_part(smtp_server: SmtpServer, open_sender: OpenSender) -> None:
    message = outbound(
        content="Grüße, Bob: the report is attached.\n.\nA line with only a dot, above.",
        helper_metadata={
            "email": {
                "subject": "Bericht für März ✓",
                "sender_name": "Alice Müller, Reports",
                "reply_to": "replies@example.org",
                "html": "<p>Grüße, <b>Bob</b></p>",
                "attachments": [
                    {"name": "report.pdf", "content": base64.b64encode(PDF).decode()},
                    {
                        "name": "données é.csv",
                        "content": base64.b64encode(b"a;b\n1;2\n").decode(),
                        "content_type": "text/csv",
                    },
                ],
            }
        },
    )
    mail = build_email(message, MimeSettings(message_id_domain="mail.example.net"))
    sender = await open_sender(settings_for(smtp_server.port))

    with trio.fail_after(10):
        provider_id = await sender.send(mail)

    assert provider_id == f"<{message.message_id}@mail.example.net>"
    [received] = smtp_server.recorder.received
    assert received.mail_from == "alice@example.org"
    assert received.rcpt_tos == ["bob@example.com"]
    assert received.content.isascii()
    parsed = BytesParser(policy=email.policy.default).parsebytes(received.content)

    [sender_address] = parsed["From"].addresses
    assert sender_address.display_name == "Alice Müller, Reports"
    assert sender_address.addr_spec == "alice@example.org"
    assert parsed["To"].addresses[0].addr_spec == "bob@example.com"
    assert parsed["Subject"] == "Bericht für März ✓"
    assert parsed["Reply-To"].addresses[0].addr_spec == "replies@example.org"
    assert parsed["Message-ID"] == f"<{message.message_id}@mail.example.net>"
    assert parsed["Date"].datetime == message.timestamp.replace(microsecond=0, tzinfo=UTC)
    assert parsed["MIME-Version"] == "1.0"

    assert parsed.get_content_type() == "multipart/mixed"
    body, pdf, csv = parsed.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    text, html = body.iter_parts()
    assert text.get_content_type() == "text/plain"
    # Text arrives with the CRLF line ends SMTP carries (and the "." line unstuffed).
    assert text.get_content() == (
        "Grüße, Bob: the report is attached.\r\n.\r\nA line with only a dot, above.\r\n"
    )
    assert html.get_content_type() == "text/html"
    assert html.get_content() == "<p>Grüße, <b>Bob</b></p>\r\n"
    for part in (text, html):
        assert "MIME-Version" not in part

    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_filename() == "report.pdf"
    assert pdf.get_content_type() == "application/pdf"  # guessed from the name
    assert pdf["Content-Transfer-Encoding"] == "base64"
    assert pdf.get_content() == PDF
    assert csv.get_filename() == "données é.csv"
    assert csv.get_content_type() == "text/csv"
    assert csv.get_payload(decode=True) == b"a;b\n1;2\n"


async def test_text_only_mail_is_one_part(
    smtp_server: SmtpServer, open_sender: OpenSender
) -> None:
    sender = await open_sender(settings_for(smtp_server.port))
    with trio.fail_after(10):
        await sender.send(build_email(outbound(content="Héllo")))
    [received] = smtp_server.recorder.received
    parsed = BytesParser(policy=email.policy.default).parsebytes(received.content)
    assert not parsed.is_multipart()
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content() == "Héllo\r\n"
    assert parsed["Subject"] is None


async def test_queue_id_in_the_reply_is_the_provider_id(
    start_server: StartServer, open_sender: OpenSender
) -> None:
    server = start_server(Recorder(data_reply="250 2.0.0 Ok: queued as 4F2B81C0A4B"))
    sender = await open_sender(settings_for(server.port))
    with trio.fail_after(10):
        assert await sender.send(plain_mail()) == "4F2B81C0A4B"


@pytest.mark.parametrize(
    ("reply", "queue_id"),
    [
        ("2.0.0 Ok: queued as 4F2B81C0A4B", "4F2B81C0A4B"),  # Postfix
        ("OK id=1tAbCd-000123-Xy", "1tAbCd-000123-Xy"),  # Exim
        ("Ok 0100018c5e5b3a1b-6a2e-4d55-000000", "0100018c5e5b3a1b-6a2e-4d55-000000"),  # SES
        ("2.0.0 Ok 0100018c5e5b3a1b", "0100018c5e5b3a1b"),
        ("OK", None),
        ("2.0.0 OK  1700000000 a1-20020a17090a gsmtp", None),
        ("Message accepted for delivery", None),
    ],
)
def test_queue_id_from_reply(reply: str, queue_id: str | None) -> None:
    assert queue_id_from_reply(reply) == queue_id


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recorder", "expected", "words"),
    [
        (
            Recorder(
                rcpt_replies={"bob@example.com": "550 5.1.1 <bob@example.com>: no such user"}
            ),
            PermanentFailure,
            "RCPT TO <bob@example.com> refused: 550 5.1.1 <bob@example.com>: no such user",
        ),
        (
            Recorder(rcpt_replies={"bob@example.com": "450 4.2.0 greylisted, try later"}),
            TemporaryFailure,
            "RCPT TO <bob@example.com> refused: 450 4.2.0 greylisted, try later",
        ),
        (
            Recorder(data_reply="554 5.7.1 message looks like spam"),
            PermanentFailure,
            "the message refused: 554 5.7.1 message looks like spam",
        ),
        (
            Recorder(data_reply="451 4.3.0 local error, try later"),
            TemporaryFailure,
            "the message refused: 451 4.3.0 local error, try later",
        ),
    ],
)
async def test_refusal_outcome_and_the_session_is_kept(
    start_server: StartServer,
    open_sender: OpenSender,
    recorder: Recorder,
    expected: type[ProviderError],
    words: str,
) -> None:
    server = start_server(recorder)
    sender = await open_sender(settings_for(server.port))

    reason = await failure_of(sender, plain_mail(), expected)
    assert reason == words
    assert server.recorder.received == []

    # The server answered, so the session goes on serving the next mail.
    recorder.rcpt_replies.clear()
    recorder.data_reply = "250 OK"
    with trio.fail_after(10):
        await sender.send(plain_mail())
    assert len(server.recorder.received) == 1
    assert len(server.recorder.peers) == 1


async def test_message_over_the_servers_size_limit_is_refused_for_good(
    start_server: StartServer, open_sender: OpenSender
) -> None:
    server = start_server(data_size_limit=1000)
    sender = await open_sender(settings_for(server.port))
    mail = build_email(outbound(content="x" * 2000))
    reason = await failure_of(sender, mail, PermanentFailure)
    assert reason.startswith("MAIL FROM <alice@example.org> refused: 552")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_authentication_required_makes_the_provider_unavailable(
    start_server: StartServer, open_sender: OpenSender
) -> None:
    server = start_server(authenticator=authenticate, auth_required=True, auth_require_tls=False)
    sender = await open_sender(settings_for(server.port))
    reason = await failure_of(sender, plain_mail(), ProviderUnavailable)
    assert "530" in reason


# -- failures of the connection -----------------------------------------------------------


async def test_server_that_hangs_times_out_as_a_temporary_failure(
    start_server: StartServer, open_sender: OpenSender
) -> None:
    server = start_server(Recorder(on_data="hang"))
    sender = await open_sender(settings_for(server.port, timeout=0.3))
    reason = await failure_of(sender, plain_mail(), TemporaryFailure)
    assert reason == f"session with 127.0.0.1:{server.port} failed while sending: timed out"


async def test_connection_dropped_during_the_data_is_a_temporary_failure(
    start_server: StartServer, open_sender: OpenSender
) -> None:
    server = start_server(Recorder(on_data="drop"))
    sender = await open_sender(settings_for(server.port))
    reason = await failure_of(sender, plain_mail(), TemporaryFailure)
    assert "Connection unexpectedly closed" in reason

    server.recorder.on_data = None
    with trio.fail_after(10):
        await sender.send(plain_mail())
    assert len(server.recorder.peers) == 2  # the broken session was not reused


async def test_connection_refused_makes_the_provider_unavailable(open_sender: OpenSender) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        sender = await open_sender(settings_for(port))
        reason = await failure_of(sender, plain_mail(), ProviderUnavailable)
    assert reason.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "refused" in reason


async def test_unknown_host_makes_the_provider_unavailable(open_sender: OpenSender) -> None:
    settings = SmtpSettings(host="smtp.nonexistent.invalid", security="none", timeout=2)
    sender = await open_sender(settings)
    reason = await failure_of(sender, plain_mail(), ProviderUnavailable)
    assert reason.startswith("cannot connect to smtp.nonexistent.invalid:25: ")


async def test_garbage_greeting_makes_the_provider_unavailable(
    nursery: trio.Nursery, open_sender: OpenSender
) -> None:
    async def http_server(peer: ScriptedPeer) -> None:
        await peer.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await peer.read_line()

    port = await serve_script(nursery, http_server)
    sender = await open_sender(settings_for(port))
    reason = await failure_of(sender, plain_mail(), ProviderUnavailable)
    assert "not an SMTP reply: /1.1 400 Bad Request" in reason  # smtplib ate "HTTP"


async def test_silent_server_makes_the_provider_unavailable(
    nursery: trio.Nursery, open_sender: OpenSender
) -> None:
    async def silent(peer: ScriptedPeer) -> None:
        await trio.sleep_forever()

    port = await serve_script(nursery, silent)
    sender = await open_sender(settings_for(port, timeout=0.3))
    reason = await failure_of(sender, plain_mail(), ProviderUnavailable)
    assert reason == f"cannot connect to 127.0.0.1:{port}: timed out"


async def test_reply_cut_off_after_the_data_is_a_temporary_failure(
    nursery: trio.Nursery, open_sender: OpenSender
) -> None:
    async def cut_off(peer: ScriptedPeer) -> None:
        await peer.greet_and_accept()
        await peer.send(b"25")  # and the connection closes, mid-reply

    port = await serve_script(nursery, cut_off)
    sender = await open_sender(settings_for(port))
    reason = await failure_of(sender, plain_mail(), TemporaryFailure)
    assert reason == "the message refused: not an SMTP reply: 25"


@pytest.mark.parametrize(
    "reply",
    [b"hello there, this is not SMTP\r\n", b"250 " + b"x" * 10_000 + b"\r\n"],
    ids=["garbage", "line-too-long"],
)
async def test_reply_that_is_not_smtp_is_a_temporary_failure(
    nursery: trio.Nursery, open_sender: OpenSender, reply: bytes
) -> None:
    async def garbage_to_mail(peer: ScriptedPeer) -> None:
        await peer.send(b"220 scripted ESMTP\r\n")
        await peer.command("EHLO")
        await peer.send(b"250 scripted\r\n")
        await peer.command("MAIL")
        await peer.send(reply)
        await peer.read_line()

    port = await serve_script(nursery, garbage_to_mail)
    sender = await open_sender(settings_for(port))
    reason = await failure_of(sender, plain_mail(), TemporaryFailure)
    assert reason.startswith(("MAIL FROM <alice@example.org> refused: not an SMTP reply", "ses"))


async def test_server_without_ehlo_is_spoken_to_with_helo(
    nursery: trio.Nursery, open_sender: OpenSender
) -> None:
    async def old_server(peer: ScriptedPeer) -> None:
        await peer.send(b"220 old SMTP\r\n")
        await peer.command("EHLO")
        await peer.send(b"502 5.5.2 Error: command not recognized\r\n")
        await peer.command("HELO")
        await peer.send(b"250 old\r\n")
        mail_from = await peer.command("MAIL")
        assert mail_from.upper() == b"MAIL FROM:<ALICE@EXAMPLE.ORG>"  # no SIZE: not ESMTP
        await peer.send(b"250 ok\r\n")
        await peer.command("RCPT")
        await peer.send(b"250 ok\r\n")
        await peer.command("DATA")
        await peer.send(b"354 go ahead\r\n")
        await peer.read_data()
        await peer.send(b"250 ok id=old-1\r\n")
        await peer.command("QUIT")
        await peer.send(b"221 bye\r\n")

    port = await serve_script(nursery, old_server)
    sender = await open_sender(settings_for(port))
    with trio.fail_after(10):
        assert await sender.send(plain_mail()) == "old-1"


async def test_no_starttls_offered_makes_the_provider_unavailable(
    smtp_server: SmtpServer, open_sender: OpenSender
) -> None:
    sender = await open_sender(settings_for(smtp_server.port, security="starttls"))
    reason = await failure_of(sender, plain_mail(), ProviderUnavailable)
    assert "STARTTLS extension not supported" in reason
    assert smtp_server.recorder.received == []


# -- TLS and AUTH -------------------------------------------------------------------------


async def test_starttls_with_auth(
    start_server: StartServer, open_sender: OpenSender, server_tls: ssl.SSLContext, ca_file: str
) -> None:
    server = start_server(
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    settings = settings_for(
        server.port,
        security="starttls",
        ca_file=ca_file,
        username=USERNAME,
        password=PASSWORD,
    )
    sender = await open_sender(settings)
    with trio.fail_after(10):
        await sender.send(plain_mail())
        await sender.send(plain_mail())
    assert [mail.tls for mail in server.recorder.received] == [True, True]
    assert len(server.recorder.peers) == 1


async def test_implicit_tls(
    start_server: StartServer, open_sender: OpenSender, server_tls: ssl.SSLContext, ca_file: str
) -> None:
    server = start_server(ssl_context=server_tls)
    sender = await open_sender(settings_for(server.port, security="tls", ca_file=ca_file))
    with trio.fail_after(10):
        await sender.send(plain_mail())
    [received] = server.recorder.received
    assert received.tls


async def test_untrusted_certificate_makes_the_provider_unavailable(
    start_server: StartServer, open_sender: OpenSender, server_tls: ssl.SSLContext
) -> None:
    server = start_server(ssl_context=server_tls)
    sender = await open_sender(settings_for(server.port, security="tls"))  # system CAs
    reason = await failure_of(sender, plain_mail(), ProviderUnavailable)
    assert "certificate verify failed" in reason
    assert server.recorder.received == []


async def test_unverified_tls_when_told_so(
    start_server: StartServer, open_sender: OpenSender, server_tls: ssl.SSLContext
) -> None:
    server = start_server(tls_context=server_tls, require_starttls=True)
    settings = settings_for(server.port, security="starttls", verify_certificate=False)
    sender = await open_sender(settings)
    with trio.fail_after(10):
        await sender.send(plain_mail())
    assert len(server.recorder.received) == 1


async def test_wrong_password_makes_the_provider_unavailable(
    start_server: StartServer, open_sender: OpenSender, server_tls: ssl.SSLContext, ca_file: str
) -> None:
    server = start_server(tls_context=server_tls, authenticator=authenticate, auth_required=True)
    settings = settings_for(
        server.port, security="starttls", ca_file=ca_file, username=USERNAME, password="wrong"
    )
    sender = await open_sender(settings)
    with structlog.testing.capture_logs() as logs:
        reason = await failure_of(sender, plain_mail(), ProviderUnavailable)
    assert "535" in reason
    assert "wrong" not in repr(logs)


async def test_auth_not_offered_makes_the_provider_unavailable(
    start_server: StartServer, open_sender: OpenSender
) -> None:
    server = start_server()  # AUTH only after TLS, which this server lacks
    settings = settings_for(server.port, username=USERNAME, password=PASSWORD)
    sender = await open_sender(settings)
    reason = await failure_of(sender, plain_mail(), ProviderUnavailable)
    assert "AUTH extension not supported" in reason


# -- sessions -----------------------------------------------------------------------------


async def test_mails_share_one_session(smtp_server: SmtpServer, open_sender: OpenSender) -> None:
    sender = await open_sender(settings_for(smtp_server.port))
    with trio.fail_after(10):
        for _ in range(3):
            await sender.send(plain_mail())
    assert len(smtp_server.recorder.received) == 3
    assert len(smtp_server.recorder.peers) == 1


async def test_disconnect_between_mails_is_recovered_from(
    smtp_server: SmtpServer, open_sender: OpenSender
) -> None:
    sender = await open_sender(settings_for(smtp_server.port))
    with trio.fail_after(10):
        await sender.send(plain_mail())
        smtp_server.drop_connections()
        await wait_until(smtp_server, lambda recorder: recorder.lost >= 1)
        await sender.send(plain_mail())
    assert len(smtp_server.recorder.received) == 2
    assert len(smtp_server.recorder.peers) == 2


async def test_concurrent_mails_use_at_most_max_connections(
    smtp_server: SmtpServer, open_sender: OpenSender
) -> None:
    sender = await open_sender(settings_for(smtp_server.port, max_connections=2))
    with trio.fail_after(10):
        async with trio.open_nursery() as sends:
            for n in range(6):
                sends.start_soon(sender.send, plain_mail(f"user{n}@example.com"))
    recipients = sorted(mail.rcpt_tos[0] for mail in smtp_server.recorder.received)
    assert recipients == [f"user{n}@example.com" for n in range(6)]
    assert 1 <= len(smtp_server.recorder.peers) <= 2


async def test_idle_sessions_are_closed_with_quit(
    smtp_server: SmtpServer, open_sender: OpenSender
) -> None:
    sender = await open_sender(settings_for(smtp_server.port, idle_timeout=0.2))
    with trio.fail_after(10):
        await sender.send(plain_mail())
        await wait_until(smtp_server, lambda recorder: recorder.quits == 1)
        await sender.send(plain_mail())  # a new session
    assert len(smtp_server.recorder.peers) == 2


async def test_stopping_run_closes_every_session(smtp_server: SmtpServer) -> None:
    sender = SmtpSender(settings_for(smtp_server.port, max_connections=2))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(sender.run)
            async with trio.open_nursery() as sends:
                for _ in range(2):
                    sends.start_soon(sender.send, plain_mail())
            sessions = len(smtp_server.recorder.peers)
            nursery.cancel_scope.cancel()
        await wait_until(smtp_server, lambda recorder: recorder.quits == sessions)

        # A sender whose run has ended still sends, closing the session after the mail.
        await sender.send(plain_mail())
        await wait_until(smtp_server, lambda recorder: recorder.quits == sessions + 1)


# -- settings -----------------------------------------------------------------------------


def test_default_port_follows_the_security() -> None:
    assert SmtpSettings(host="h", security="none").port_number == 25
    assert SmtpSettings(host="h").port_number == 587
    assert SmtpSettings(host="h", security="tls").port_number == 465
    assert SmtpSettings(host="h", security="tls", port=2465).port_number == 2465


def test_username_needs_a_password() -> None:
    with pytest.raises(ValueError, match="username and password go together"):
        SmtpSettings(host="h", username="u")


def test_password_stays_out_of_repr() -> None:
    settings = SmtpSettings(host="h", username="u", password=SecretStr("hunter2"))
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in repr(settings.redacted())


def test_unusable_ca_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ca_file: cannot load"):
        SmtpSender(SmtpSettings(host="h", ca_file="/nonexistent/ca.pem"))
