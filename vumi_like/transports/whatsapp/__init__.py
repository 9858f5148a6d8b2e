"""``WhatsAppCloudTransport``: WhatsApp through Meta's Cloud API (the Graph API).

* **Sending**: ``POST {api_base_url}/{api_version}/{phone_number_id}/messages`` with
  the access token as a bearer token. A text message of ``content``, or a template
  message when ``helper_metadata["whatsapp"]["template"]`` is ``{name, language,
  components}``. A reply to an inbound quotes it (``context.message_id``): the
  inbound's WhatsApp id travels in its ``transport_metadata["whatsapp"]``, which
  ``Message.reply()`` copies. The ack carries Meta's id (``messages[0].id``, a
  ``wamid.``); a 2xx answer without one is acked under our own message id (Meta has
  the message, and trying again would send it twice), logged as an error.
* **Outcomes** (``graph.py``): a refused token pauses outbound until the Graph API
  takes it again; throttling, 408/429/5xx, timeouts and connection errors are
  retried; other errors are nacked with Meta's code and message.
* **Webhook** at ``webhook_path``: ``GET`` is Meta's verification (``hub.mode=subscribe``
  and our ``verify_token`` -> ``hub.challenge`` echoed as text; else 403). ``POST``
  must carry ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body keyed
  with app_secret>``, checked in constant time before the body is parsed (else 403,
  one log line, nothing published). Then each inbound message is published
  (``transport_type`` ``whatsapp``) and each status becomes a delivery report by its
  WhatsApp id: ``sent`` -> pending, ``delivered`` and ``read`` -> delivered, ``failed``
  -> failed, with Meta's status object (and its ``errors``) in
  ``transport_metadata["whatsapp"]``. The answer is 200 only once all of it is with
  the broker, so Meta sends again whatever we did not take; a body that is not a
  readable notification is refused whole (400).

Layout: ``config.py`` (the keys), ``graph.py`` (sending: bodies, answers, errors),
``webhook.py`` (Meta's notifications and their signature), ``transport.py`` (the worker).
"""

from vumi_like.transports.whatsapp.config import WhatsAppCloudConfig
from vumi_like.transports.whatsapp.graph import TokenRejected, graph_failure, message_request
from vumi_like.transports.whatsapp.transport import WhatsAppCloudTransport
from vumi_like.transports.whatsapp.webhook import (
    SIGNATURE_HEADER,
    inbound_message,
    read_notification,
    signature,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TokenRejected",
    "WhatsAppCloudConfig",
    "WhatsAppCloudTransport",
    "graph_failure",
    "inbound_message",
    "message_request",
    "read_notification",
    "signature",
]
