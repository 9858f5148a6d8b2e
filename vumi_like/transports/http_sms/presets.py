"""Presets: the request and callback settings of a known provider, as config defaults.

``preset: kannel`` or ``preset: twilio`` fills every key the config does not set. A key
the config sets wins; for the mappings (``query``, ``headers``, ``body``,
``status_map``) it wins entry by entry, and an entry set to null removes the preset's
(``body: {StatusCallback: null}`` sends Twilio no callback URL).

**Kannel** (``sendsms`` of a ``sendsms-user`` group, on smsbox's port, 13013 by
default; ``url`` is that address and path, ``http://kannel:13013/cgi-bin/sendsms``):

* ``GET`` with ``username``, ``password``, ``from``, ``to``, ``text``, ``dlr-mask`` and
  ``dlr-url`` as query parameters. The mask asks for every report Kannel has:
  1 delivered to the phone, 2 not delivered to the phone, 4 queued on the SMSC,
  8 delivered to the SMSC, 16 not delivered to the SMSC (1+2+4+8+16 = 31).
* Kannel answers ``202`` with ``0: Accepted for delivery`` or ``3: Queued for later
  delivery``, and 4xx/5xx with a line of text on errors. Its answer carries no id, so
  the provider id is our ``message_id`` (no ``id_*`` key), and the ``dlr-url`` carries
  that id back: Kannel fetches it with ``%d`` replaced by the report's type, which
  ``status_map`` reads (1 -> delivered, 2 and 16 -> failed, 4 and 8 -> pending).
  A report so names its message itself: no message cache is needed to match it,
  before or after a restart. The shared secret rides in the same URL; Kannel cannot
  add a header.
* Inbound: an ``sms-service`` whose ``get-url`` is
  ``<inbound_url>?from=%p&to=%P&content=%a&secret=<callback_secret>``, with
  ``omit-empty = true`` (our answer is empty; Kannel would otherwise send the phone
  "<Empty reply from service provider>").

**Twilio** (Programmable Messaging, API version 2010-04-01):

* ``POST`` a form (``To``, ``From``, ``Body``, ``StatusCallback``) to
  ``/2010-04-01/Accounts/{account_sid}/Messages.json`` with basic auth: the Account SID
  (or an API key SID as ``username``) and the auth token (or the key's secret as
  ``password``). Twilio answers ``201`` with the Message resource; its ``sid`` is the
  provider id. Errors are JSON (``code``, ``message``) with 4xx; 429 when over the
  account's rate.
* Status callbacks are form POSTs to ``StatusCallback`` with ``MessageSid``,
  ``MessageStatus`` and, on failure, ``ErrorCode``. ``accepted``, ``scheduled``,
  ``queued``, ``sending`` and ``sent`` are pending (``sent`` only means the carrier has
  it), ``delivered`` and ``read`` delivered, ``undelivered``, ``failed`` and
  ``canceled`` failed.
* Inbound messages are form POSTs with ``From``, ``To``, ``Body`` and ``MessageSid``,
  answered with empty TwiML (``<Response/>``): no reply.
* Every callback is signed: ``X-Twilio-Signature`` is the base64 HMAC-SHA1, keyed by
  the account's auth token, of the full URL Twilio called followed by each POST
  parameter's name and value, sorted by name. ``callback_secret`` is that auth token;
  it defaults to ``password``, which is the auth token unless an API key is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PRESETS", "with_preset"]

# Mappings merged entry by entry rather than replaced whole.
MERGED_KEYS = ("query", "headers", "body", "status_map")

KANNEL: dict[str, Any] = {
    "method": "GET",
    "query": {
        "username": "{username}",
        "password": "{password}",
        "from": "{from_addr}",
        "to": "{to_addr}",
        "text": "{content}",
        "charset": "UTF-8",
        "dlr-mask": "31",
        "dlr-url": "{dlr_url}?id={message_id}&status=%d&secret={callback_secret}",
    },
    "success_regex": r"^\s*[03]:",
    "callback_auth": "secret",
    "dlr_id_field": "id",
    "dlr_status_field": "status",
    "status_map": {
        "1": "delivered",
        "2": "failed",
        "4": "pending",
        "8": "pending",
        "16": "failed",
    },
    "inbound_from_field": "from",
    "inbound_to_field": "to",
    "inbound_content_field": "content",
}

TWILIO: dict[str, Any] = {
    "url": "https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Messages.json",
    "method": "POST",
    "body_format": "form",
    "body": {
        "To": "{to_addr}",
        "From": "{from_addr}",
        "Body": "{content}",
        "StatusCallback": "{dlr_url}",
    },
    "auth": "basic",
    "id_json_path": "sid",
    "callback_auth": "twilio_signature",
    "dlr_id_field": "MessageSid",
    "dlr_status_field": "MessageStatus",
    "dlr_error_field": "ErrorCode",
    "status_map": {
        "accepted": "pending",
        "scheduled": "pending",
        "queued": "pending",
        "sending": "pending",
        "sent": "pending",
        "delivered": "delivered",
        "read": "delivered",
        "undelivered": "failed",
        "failed": "failed",
        "canceled": "failed",
    },
    "inbound_from_field": "From",
    "inbound_to_field": "To",
    "inbound_content_field": "Body",
    "inbound_id_field": "MessageSid",
    "inbound_answer": "twiml",
}


def _twilio_credentials(data: dict[str, Any]) -> None:
    # The Account SID logs in unless an API key does; the auth token signs callbacks.
    if data.get("username") is None and data.get("account_sid") is not None:
        data["username"] = data["account_sid"]
    if data.get("callback_secret") is None and data.get("password") is not None:
        data["callback_secret"] = data["password"]


PRESETS: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], None] | None]] = {
    "kannel": (KANNEL, None),
    "twilio": (TWILIO, _twilio_credentials),
}


def with_preset(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` over its preset's defaults (if it names a known one); null entries of the
    merged mappings dropped."""
    defaults, derive = PRESETS.get(str(data.get("preset")), ({}, None))
    merged = {**defaults, **data}
    for key in MERGED_KEYS:
        given = data.get(key)
        if isinstance(given, Mapping):
            base = defaults.get(key, {})
            merged[key] = {
                name: value for name, value in {**base, **given}.items() if value is not None
            }
    if derive is not None:
        derive(merged)
    return merged
