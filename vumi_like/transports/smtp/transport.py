"""``SmtpTransport``: e-mail out through an SMTP server.

Each outbound becomes an e-mail (``mime.build_email``: the envelope's ``content`` as
the text body, subject, HTML, attachments, sender name and reply-to from
``helper_metadata["email"]``) and is handed to the server over a pool of open
sessions (``sender.SmtpSender``). The server's 250 is the ``ack`` (its queue id, or
the Message-ID, as ``sent_message_id``), a 5xx a ``nack`` with its reply, a 4xx or a
session failing mid-mail a retry held by the broker.

When no session can be opened at all (server down, TLS or AUTH failing) the transport
stops taking outbound (``BaseTransport.provider_down``) and tries to open one every
``reconnect_interval`` seconds (doubling up to ``reconnect_interval_max``), resuming
as soon as it can. SMTP has no delivery reports of its own: SENT is as far as a
message's status goes, unless a bounce-processing system reports back.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from pydantic import Field

from vumi_like.messages import Message
from vumi_like.transports.base import BaseTransport, TransportConfig
from vumi_like.transports.outcomes import ProviderUnavailable
from vumi_like.transports.smtp.mime import MimeSettings, build_email
from vumi_like.transports.smtp.sender import SmtpSender, SmtpSettings

__all__ = ["SmtpTransport", "SmtpTransportConfig"]


class SmtpTransportConfig(TransportConfig, SmtpSettings, MimeSettings):
    reconnect_interval: float = Field(
        default=1.0, gt=0, description="Seconds before trying an unreachable server again"
    )
    reconnect_interval_max: float = Field(
        default=60.0, gt=0, description="Longest wait between tries of an unreachable server"
    )


class SmtpTransport(BaseTransport):
    config_class = SmtpTransportConfig
    config: SmtpTransportConfig

    async def setup_provider(self) -> None:
        config = self.config
        self.mime_settings = MimeSettings.model_validate(
            config.model_dump(include=set(MimeSettings.model_fields))
        )
        self.sender = SmtpSender(
            SmtpSettings.model_validate(config.model_dump(include=set(SmtpSettings.model_fields)))
        )
        self._recovering = False
        await self.nursery.start(self.sender.run)

    async def send(self, message: Message) -> Sequence[str]:
        # Building a mail with large attachments is CPU work: off the event loop.
        mail = await trio.to_thread.run_sync(build_email, message, self.mime_settings)
        try:
            return [await self.sender.send(mail)]
        except ProviderUnavailable:
            if not self._recovering:
                self._recovering = True
                self.nursery.start_soon(self._wait_until_reachable)
            raise

    async def _wait_until_reachable(self) -> None:
        wait = self.config.reconnect_interval
        try:
            while True:
                await trio.sleep(wait)
                try:
                    await self.sender.check()
                except ProviderUnavailable as exc:
                    self.provider_down(exc.reason)
                    wait = min(wait * 2, self.config.reconnect_interval_max)
                    continue
                self.provider_up()
                return
        finally:
            self._recovering = False
