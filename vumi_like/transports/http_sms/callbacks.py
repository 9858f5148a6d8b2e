"""Provider callbacks (delivery reports, inbound messages): read, then verified.

A callback's fields are found wherever the provider put them: the query string (Kannel
fetches a URL), a form (Twilio), or a JSON object; body fields win over query
parameters of the same name, and a JSON body's fields may be dotted paths
(``lookup.find``).

Verification (``callback_auth``) happens before anything is read from the fields:

* ``secret``: ``callback_secret``, in the query parameter ``callback_verify_param`` or
  the header ``callback_verify_header``, compared in constant time. For providers
  that call a URL we give them (Kannel's ``dlr-url``) or that can add a header.
* ``twilio_signature``: ``X-Twilio-Signature`` must be the base64 HMAC-SHA1, keyed by
  the auth token (``callback_secret``), of the URL Twilio called followed by every
  POST parameter's name and value, sorted by name. The URL is rebuilt as the provider
  saw it: ``callback_base_url`` (so a TLS-terminating proxy in front does not break
  it) plus the path and query string this server received. A body that is not a form
  (Twilio's JSON webhooks) is not in the signature; it must then match the SHA-256
  the signed URL carries in its ``bodySHA256`` parameter.
* ``none``: anyone who can reach the port can report deliveries; for a private network.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

import attrs
from quart import request

from vumi_like.transports.http_sms.config import HttpSmsTransportConfig
from vumi_like.transports.http_sms.lookup import find_text

__all__ = ["Callback", "read_callback", "refusal", "twilio_signature"]

TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@attrs.frozen
class Callback:
    """A callback request as read: where it was sent and what it carries."""

    url: str  # the full URL as the provider called it
    query: dict[str, str]
    form: list[tuple[str, str]]  # every POST form parameter, repeated names included
    fields: dict[str, Any]  # query, then the form's or JSON object's fields over it
    headers: dict[str, str]  # names in lower case
    body: bytes  # as received

    def text(self, name: str) -> str | None:
        """Field ``name`` as text; None when it is missing or empty."""
        return find_text(self.fields, name)


async def read_callback(base_url: str | None) -> Callback:
    """The callback being served (in a Quart request context)."""
    query = {name: value for name, value in request.args.items()}
    form: list[tuple[str, str]] = []
    fields: dict[str, Any] = dict(query)
    body = b""  # a form's parameters are signed rather than its bytes
    if request.mimetype in _FORM_TYPES:
        parsed = await request.form
        form = list(parsed.items(multi=True))
        fields.update(parsed.items())
    else:
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
        if request.is_json:
            document = await request.get_json(silent=True)
            if isinstance(document, dict):
                fields.update(document)
    path = request.path + (f"?{request.query_string.decode()}" if request.query_string else "")
    base = base_url or f"{request.scheme}://{request.host}"
    headers = {name.lower(): value for name, value in request.headers.items()}
    return Callback(
        url=base + path, query=query, form=form, fields=fields, headers=headers, body=body
    )


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature`` for a request to ``url`` with POST ``params``."""
    signed = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def refusal(callback: Callback, config: HttpSmsTransportConfig) -> str | None:
    """Why ``callback`` is not to be trusted, or None when it verifies."""
    if config.callback_auth == "none":
        return None
    # The config requires a secret whenever callbacks are served and verified.
    assert config.callback_secret is not None
    secret = config.callback_secret.get_secret_value()
    if config.callback_auth == "secret":
        given = callback.headers.get(config.callback_verify_header.lower())
        if given is None:
            given = callback.query.get(config.callback_verify_param)
        if given is None:
            return "no callback secret"
        return None if _same(given, secret) else "wrong callback secret"
    given = callback.headers.get(TWILIO_SIGNATURE_HEADER.lower())
    if given is None:
        return f"no {TWILIO_SIGNATURE_HEADER}"
    expected = twilio_signature(secret, callback.url, callback.form)
    if not _same(given, expected):
        return f"{TWILIO_SIGNATURE_HEADER} does not match"
    if callback.body and not _same(
        callback.query.get("bodySHA256"), hashlib.sha256(callback.body).hexdigest()
    ):
        return "the body does not match the signed bodySHA256"
    return None
