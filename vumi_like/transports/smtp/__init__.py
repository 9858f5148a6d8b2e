"""E-mail over SMTP: ``SmtpTransport``, on a provider layer free of the worker runtime.

An outbound ``Message`` becomes an ``EmailMessage`` with ``mime.build_email``, and
``sender.SmtpSender.send`` hands it to the configured server, returning the provider
id or raising one of the outcomes of ``vumi_like.transports.outcomes``; the transport
(``transport.SmtpTransport``) turns those into events.
"""

from vumi_like.transports.smtp.transport import SmtpTransport, SmtpTransportConfig

__all__ = ["SmtpTransport", "SmtpTransportConfig"]
