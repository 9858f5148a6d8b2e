"""E-mail over SMTP: building the e-mail (``mime``) and sending it (``sender``).

This is the provider layer of the SMTP transport, free of the worker runtime: an
outbound ``Message`` becomes an ``EmailMessage`` with ``build_email``, and
``SmtpSender.send`` hands it to the configured server, returning the provider id or
raising one of the outcomes of ``vumi_like.transports.outcomes``.
"""
