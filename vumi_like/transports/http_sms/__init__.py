"""An SMS aggregator's HTTP API, described by config: ``HttpSmsTransport``.

One transport for the many SMS providers whose API is "send an HTTP request per
message, get delivery reports and inbound messages as HTTP callbacks". The config
says how the request looks (method, URL, query, headers, form or JSON body, from
templates over the message), how to tell an accepted message from a refused one and
where its provider id is, and where the callbacks' fields are and how they are
verified. ``preset: kannel`` and ``preset: twilio`` fill all of that in for those two.

* ``config.py``: the keys, checked at load (templates, regexes, credentials).
* ``presets.py``: Kannel's and Twilio's settings, and the facts behind them.
* ``templates.py``: the restricted ``{placeholder}`` templates.
* ``request.py``: the request for an outbound message.
* ``answers.py``: the answer read into a provider id or a failure.
* ``callbacks.py``: callbacks read and verified (shared secret, Twilio's signature).
* ``lookup.py``: a field or dotted path in what a provider sent.
* ``transport.py``: the worker.

See ``docs/transports/http_sms.md``.
"""

from vumi_like.transports.http_sms.config import HttpSmsTransportConfig
from vumi_like.transports.http_sms.transport import HttpSmsTransport

__all__ = ["HttpSmsTransport", "HttpSmsTransportConfig"]
