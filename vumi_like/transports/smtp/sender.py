"""``SmtpSender``: hands e-mails to one SMTP server over a small pool of open sessions.

Why a thread
------------
The SMTP client is the standard library's ``smtplib``, which blocks (aiosmtplib runs
only on asyncio). Each ``send`` runs one whole SMTP transaction in a worker thread,
``trio.to_thread.run_sync``, bounded by the sender's own ``CapacityLimiter`` of
``max_connections`` rather than trio's shared default one, so a burst of mail waits in
trio, cancellably, and leaves the default threads to others. Every socket operation
is bounded by ``timeout`` (smtplib sets it on the socket, and a TLS socket keeps it).
A thread cannot be interrupted, so a cancelled ``send`` waits for its thread, which
ends within a few times ``timeout`` at worst (connect, greeting, TLS, AUTH, each
command); abandoning it would leave a session half-used. The one wait not bounded so is the
host name lookup, which the operating system's resolver bounds.

Why a pool of sessions
----------------------
Opening a session costs a TCP handshake, the greeting, EHLO, a TLS handshake, EHLO
again and AUTH: half a dozen round trips and some public-key work, where a mail on an
open session costs three (MAIL, RCPT, DATA). So a session goes back to the pool after
its mail and the next send takes it (the most recently used first, so a quiet period
lets the others expire). Before reuse it is checked with RSET, one round trip that also
clears whatever a refused transaction left; if that fails (the server closed it after
its own idle timeout, or restarted) it is closed and another is taken or opened. No
mail is sent on a session that did not just answer.

At most ``max_connections`` sessions exist, one per thread. ``run`` (started in the
owner's nursery) closes sessions idle for ``idle_timeout`` (checked every half of it,
so one lives at most one and a half times that), and when cancelled closes them all,
with QUIT, within ``timeout``. Without ``run`` sending still works; idle sessions then
stay open until the server drops them and the next send finds them dead.

Outcomes
--------
``send`` returns the provider id or raises one of ``vumi_like.transports.outcomes``:

* accepted (250 after the data): the server's queue id if its reply names one (Postfix
  ``queued as X``, Exim ``id=X``, Amazon SES ``Ok X``), else the e-mail's Message-ID.
* ``PermanentFailure``: MAIL, RCPT or DATA answered 5xx (unknown recipient, sender
  refused, message too large, content rejected). The first refusal decides: no data is
  sent unless every recipient is accepted, so a mail never reaches only some of them.
* ``TemporaryFailure``: any of those answered 4xx, or the session failed in the middle
  of a transaction (connection lost, a command timed out, a reply that is not SMTP).
  If that happened after the data was sent the server may have queued it: a retry
  can then deliver it twice, as at-least-once allows.
* ``ProviderUnavailable``: no session could be opened: the name does not resolve, the
  connection is refused or times out, the TLS handshake or the certificate fails, the
  greeting or EHLO is refused, STARTTLS is not offered, or AUTH fails or is not offered.
  Also a 530 (authentication required) to MAIL. A wrong password, a missing CA or a
  server that is down fails every mail alike, so the transport should stop taking
  outbound until it is fixed rather than nack its whole queue; a 535 is therefore not a
  ``PermanentFailure`` of the one mail that met it.

Every failure is logged once here, as one line naming the server, the Message-ID, the
outcome and the reason.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading
import time
from email.headerregistry import AddressHeader
from email.message import EmailMessage
from typing import Literal

import attrs
import structlog
import trio
from pydantic import Field, PositiveFloat, PositiveInt, SecretStr, model_validator

from vumi_like.config import ConfigError, ConfigModel
from vumi_like.transports.outcomes import (
    PermanentFailure,
    ProviderError,
    ProviderUnavailable,
    TemporaryFailure,
)
from vumi_like.transports.smtp.mime import EMAIL_POLICY

__all__ = ["SmtpSecurity", "SmtpSender", "SmtpSettings", "queue_id_from_reply"]

log = structlog.get_logger(__name__)

SmtpSecurity = Literal["none", "starttls", "tls"]

_DEFAULT_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "tls": 465}

# The errors an SMTP session fails with: smtplib's own, and the socket's (timeouts,
# resets, TLS errors, name lookups are all OSError).
_SESSION_ERRORS = (smtplib.SMTPException, OSError)

# Queue ids as servers word them in the reply to the data; see queue_id_from_reply.
_QUEUE_ID_PATTERNS = (
    re.compile(r"\bqueued as ([\w.-]+)", re.IGNORECASE),  # Postfix
    re.compile(r"\bid=([\w.-]+)", re.IGNORECASE),  # Exim
    re.compile(r"^(?:2\.\d{1,3}\.\d{1,3} )?ok ([\w.-]+)$", re.IGNORECASE),  # Amazon SES
)


class SmtpSettings(ConfigModel):
    """Where and how to reach the SMTP server, and how many sessions to keep open."""

    host: str = Field(description="SMTP server to send through: a host name or IP address.")
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Its port; by default 465 with security tls, 587 with starttls, 25 with none.",
    )
    security: SmtpSecurity = Field(
        default="starttls",
        description="none (plain text), starttls (plain, then upgraded to TLS before "
        "anything else; a server not offering it is an error), or tls (TLS from the "
        "first byte, 'SMTPS').",
    )
    username: str | None = Field(default=None, description="User for AUTH; none: no AUTH.")
    password: SecretStr | None = Field(default=None, description="Password for AUTH.")
    timeout: PositiveFloat = Field(
        default=30.0,
        description="Seconds allowed for each network operation: connecting, the TLS "
        "handshake, each command's reply.",
    )
    local_hostname: str | None = Field(
        default=None,
        description="Name given in EHLO; by default this machine's fully qualified name.",
    )
    ca_file: str | None = Field(
        default=None,
        description="PEM file of the CA certificates to trust; by default the system's.",
    )
    verify_certificate: bool = Field(
        default=True,
        description="Check the server's certificate and host name (turn off only for "
        "a test server).",
    )
    max_connections: PositiveInt = Field(
        default=4, description="Sessions open at once, and so mails in flight."
    )
    idle_timeout: PositiveFloat = Field(
        default=60.0, description="Seconds an unused session is kept open for the next mail."
    )

    @model_validator(mode="after")
    def _credentials_paired(self) -> SmtpSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: give both or neither")
        return self

    @property
    def port_number(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORTS[self.security]


def queue_id_from_reply(reply: str) -> str | None:
    """The queue id in a server's reply to the data (``2.0.0 Ok: queued as 4F2B81``),
    when it is worded as one of the servers we know words it; else None."""
    for pattern in _QUEUE_ID_PATTERNS:
        match = pattern.search(reply.strip())
        if match is not None:
            return match[1]
    return None


class SmtpSender:
    """Sends e-mails to the server of ``settings``; see the module docstring.

    A ``ConfigError`` here means the TLS settings cannot be used (a ``ca_file`` that
    does not load).
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._where = f"{settings.host}:{settings.port_number}"
        self._tls = _tls_context(settings) if settings.security != "none" else None
        self._limiter = trio.CapacityLimiter(settings.max_connections)
        self._pool = _Pool()
        # Found by smtplib on the first connection when not configured (a DNS lookup
        # we don't want to repeat for every session).
        self._ehlo_name = settings.local_hostname

    def __repr__(self) -> str:
        return f"<SmtpSender {self._where} {self.settings.security}>"

    async def send(self, mail: EmailMessage) -> str:
        """Send ``mail`` from its From address to its To addresses; the provider id.

        ``mail`` needs a From with one address, a To and a Message-ID (as ``build_email``
        writes them). Raises the outcome of the module docstring on failure.
        """
        message_id = str(mail["Message-ID"] or "")
        try:
            mail_from, rcpt_to = _envelope(mail)
            return await trio.to_thread.run_sync(
                self._send_in_thread, mail, mail_from, rcpt_to, message_id, limiter=self._limiter
            )
        except ProviderError as exc:
            log.warning(
                "smtp send failed",
                server=self._where,
                message_id=message_id,
                outcome=type(exc).__name__,
                reason=exc.reason,
            )
            raise

    async def check(self) -> None:
        """Open a session (or find a pooled one answering RSET) and keep it for the next
        mail; ``ProviderUnavailable`` if none can be opened. For telling when a server
        that was unreachable is back."""

        def open_one() -> None:
            self._release(self._session(), reusable=True)

        await trio.to_thread.run_sync(open_one, limiter=self._limiter)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Close sessions left idle for ``idle_timeout``; when cancelled, close them all.

        Start it with ``nursery.start(sender.run)``; it runs until cancelled. Sessions
        of sends still running when it ends are closed when those sends finish.
        """
        task_status.started()
        try:
            while True:
                await trio.sleep(self.settings.idle_timeout / 2)
                idle = self._pool.take_idle(time.monotonic() - self.settings.idle_timeout)
                if idle:
                    await trio.to_thread.run_sync(_quit_all, idle, limiter=self._limiter)
        finally:
            sessions = self._pool.close()
            if sessions:
                # Off the limiter, which sends still finishing may hold; bounded, and
                # then left to finish alone: nothing else uses these sessions.
                with trio.move_on_after(self.settings.timeout, shield=True):
                    await trio.to_thread.run_sync(_quit_all, sessions, abandon_on_cancel=True)

    # -- in the worker thread -----------------------------------------------------------

    def _send_in_thread(
        self, mail: EmailMessage, mail_from: str, rcpt_to: list[str], message_id: str
    ) -> str:
        data = mail.as_bytes(policy=EMAIL_POLICY)
        session = self._session()
        try:
            reply = _transaction(session, mail_from, rcpt_to, data)
        except _Refused as refused:
            self._release(session, reusable=refused.session_usable)
            raise refused.outcome() from None
        except _SESSION_ERRORS as exc:
            self._release(session, reusable=False)
            raise TemporaryFailure(
                f"session with {self._where} failed while sending: {_describe(exc)}"
            ) from None
        except BaseException:
            self._release(session, reusable=False)
            raise
        self._release(session, reusable=True)
        return queue_id_from_reply(reply) or message_id

    def _session(self) -> smtplib.SMTP:
        """A pooled session that answers RSET, or else a new one."""
        while (session := self._pool.take()) is not None:
            try:
                if session.rset()[0] == 250:
                    return session
            except _SESSION_ERRORS:
                pass
            session.close()
        return self._connect()

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        try:
            session = (
                smtplib.SMTP_SSL(
                    settings.host,
                    settings.port_number,
                    local_hostname=self._ehlo_name,
                    timeout=settings.timeout,
                    context=self._tls,
                )
                if settings.security == "tls"
                else smtplib.SMTP(
                    settings.host,
                    settings.port_number,
                    local_hostname=self._ehlo_name,
                    timeout=settings.timeout,
                )
            )
        except _SESSION_ERRORS as exc:
            raise ProviderUnavailable(
                f"cannot connect to {self._where}: {_describe(exc)}"
            ) from None
        self._ehlo_name = session.local_hostname
        try:
            session.ehlo_or_helo_if_needed()
            if settings.security == "starttls":
                session.starttls(context=self._tls)
                session.ehlo_or_helo_if_needed()
            if settings.username is not None and settings.password is not None:
                session.login(settings.username, settings.password.get_secret_value())
        except BaseException as exc:
            session.close()
            if isinstance(exc, _SESSION_ERRORS):
                raise ProviderUnavailable(
                    f"cannot open a session with {self._where}: {_describe(exc)}"
                ) from None
            raise
        return session

    def _release(self, session: smtplib.SMTP, *, reusable: bool) -> None:
        """Back to the pool if ``reusable``, else closed (without QUIT: the session
        failed, and waiting for its answer could take another timeout)."""
        if not reusable or session.sock is None:
            session.close()
        elif not self._pool.give_back(session):
            _quit(session)


@attrs.define
class _Pool:
    """Open sessions not in use, most recently used last; shared by the send threads
    and ``run``, hence the lock. Nothing blocking happens under it."""

    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _idle: list[tuple[smtplib.SMTP, float]] = attrs.field(factory=list)
    _closed: bool = False

    def take(self) -> smtplib.SMTP | None:
        with self._lock:
            return self._idle.pop()[0] if self._idle else None

    def give_back(self, session: smtplib.SMTP) -> bool:
        """Keep ``session`` for the next send; False if the pool is closed."""
        with self._lock:
            if self._closed:
                return False
            self._idle.append((session, time.monotonic()))
            return True

    def take_idle(self, since: float) -> list[smtplib.SMTP]:
        """Take out the sessions unused since ``since`` (a ``time.monotonic()``)."""
        with self._lock:
            idle = [session for session, used in self._idle if used <= since]
            self._idle = [(session, used) for session, used in self._idle if used > since]
        return idle

    def close(self) -> list[smtplib.SMTP]:
        """Take out every session; sessions given back from now on are refused."""
        with self._lock:
            self._closed = True
            sessions, self._idle = [session for session, _ in self._idle], []
        return sessions


class _Refused(Exception):
    """The server answered ``code`` to ``stage`` of a transaction."""

    def __init__(self, stage: str, code: int, text: bytes | str) -> None:
        self.code = code
        super().__init__(f"{stage} refused: {_reply(code, text)}")

    @property
    def session_usable(self) -> bool:
        """The server answered as SMTP, without closing (421): the session is fine."""
        return _is_reply_code(self.code) and self.code != 421

    def outcome(self) -> ProviderError:
        reason = str(self)
        if self.code == 530:  # authentication required: every mail will meet it
            return ProviderUnavailable(reason)
        if 500 <= self.code < 600:
            return PermanentFailure(reason)
        return TemporaryFailure(reason)  # 4xx, and replies that are not SMTP at all


def _transaction(session: smtplib.SMTP, mail_from: str, rcpt_to: list[str], data: bytes) -> str:
    """MAIL, RCPT for each recipient, DATA; the reply text to the data.

    ``_Refused`` at the first command not accepted.
    """
    options = [f"SIZE={len(data)}"] if session.has_extn("size") else []
    code, reply = session.mail(mail_from, options)
    if code != 250:
        raise _Refused(f"MAIL FROM <{mail_from}>", code, reply)
    for recipient in rcpt_to:
        code, reply = session.rcpt(recipient)
        if code not in (250, 251):
            raise _Refused(f"RCPT TO <{recipient}>", code, reply)
    try:
        code, reply = session.data(data)  # dot-stuffs the data and ends it with "."
    except smtplib.SMTPDataError as exc:  # the DATA command itself, before the data
        raise _Refused("DATA", exc.smtp_code, exc.smtp_error) from None
    if code != 250:
        raise _Refused("the message", code, reply)
    return reply.decode(errors="replace")


def _envelope(mail: EmailMessage) -> tuple[str, list[str]]:
    """MAIL FROM and RCPT TO for ``mail``: its From address and its To addresses."""
    senders = _addresses(mail, "From")
    recipients = _addresses(mail, "To")
    if len(senders) != 1 or not recipients or mail["Message-ID"] is None:
        raise ValueError("an e-mail to send needs one From address, a To and a Message-ID")
    if not all(address.isascii() for address in (*senders, *recipients)):
        raise PermanentFailure("non-ASCII addresses need SMTPUTF8, which is not supported")
    return senders[0], recipients


def _addresses(mail: EmailMessage, name: str) -> list[str]:
    header = mail[name]
    if not isinstance(header, AddressHeader):
        return []
    return [address.addr_spec for address in header.addresses]


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"ca_file: cannot load {settings.ca_file}: {exc}") from None
    if not settings.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    # smtplib reports a reply that timed out as "Connection unexpectedly closed".
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _reply(code: int, text: bytes | str) -> str:
    text = text.decode(errors="replace") if isinstance(text, bytes) else text
    if not _is_reply_code(code):  # smtplib makes it -1 when there are no digits at all
        return f"not an SMTP reply: {code if code != -1 else ''}{text}"
    return f"{code} {text}"


def _is_reply_code(code: int) -> bool:
    return 200 <= code < 600


def _quit(session: smtplib.SMTP) -> None:
    """Close a healthy session politely: QUIT, then close whatever the answer."""
    try:
        session.quit()
    except _SESSION_ERRORS:
        session.close()


def _quit_all(sessions: list[smtplib.SMTP]) -> None:
    for session in sessions:
        _quit(session)
