"""``VcitaChannelApp``: our transports as channels of vcita's conversation page (seed 002).

vcita's staff talk to their clients on a conversation page; its communication service
(VCS) lets a "main app" bring other channels into that page. This worker is that main
app, with the router and transports behind it, so any transport we run (SMS, WhatsApp,
e-mail, ...) is a channel. ``docs/conversations.md`` shows every flow as a sequence of
calls.

* **Channels.** An operator sets a business's OAuth access token (admin API or
  ``vumi-like vcita add-token``) and asks for a channel: the business, its type
  (``transactional`` or ``promotional``), and the transport and our address on it.
  The channel is ``pending``; a job (``<connector_name>.vcs``) creates it at VCS, and
  VCS's ``PUT /channels/{uid}`` makes it ``active``, later perhaps ``inactive``,
  ``blocked`` or ``deleted``. Messages flow only on an active channel.
* **A client writes in.** The transport's inbound (to our address) finds the channel;
  the client's session (``external_uid`` = their address) is found, or created at VCS,
  or, if ``inactive``, reactivated: one session per client and channel. Once VCS has
  confirmed it ``active`` (``PUT /sessions/{uid}``), the message is posted to VCS with
  a ``message_uid`` made from the envelope's id, the same for every retry, so VCS takes
  it once. While the channel or session awaits VCS, the envelope is retried later.
* **A staff member writes.** VCS's ``POST /messages`` is published to the client on the
  channel's transport (204 once the broker has it). Our ack / delivery report / nack
  for it move its status (``pending -> received``, or ``error``; see
  ``wire.status_for_event``), and each move is sent to VCS once
  (``PUT .../messages/{uid}``). VCS's own status updates (``PUT /messages/{uid}``)
  are recorded, forwards only.
* **Typing.** VCS's ``POST /{session_uid}/typing`` is recorded on the session and
  passed on as an outbound without content (``helper_metadata.typing``) to transports
  listed in ``typing_transports``; none of ours takes one today. An inbound without
  content carrying ``helper_metadata.typing`` from a transport is posted to VCS's
  typing endpoint, unless older than ``typing_max_age``.

Calls to VCS (paths and bodies in ``vcs.py``) are made from broker-held handlers: a
failure VCS may get over (unreachable, timeout, 408, 429, 5xx) is retried with the
project's retry policy, then dead-lettered with the reason, where ``vumi-like dlq``
shows and replays it; one it will not (another 4xx, a business without a token, an
inbound for an address with no channel, a blocked or deleted channel) is
dead-lettered at once. So a VCS outage loses nothing either way: inbound and status
updates wait in the broker, staff messages do not need VCS.

VCS's calls are authenticated with a shared secret (``webhook_secret``, as a bearer
token), the admin API with ``admin_token``; bad bodies are RFC 7807 problems. Access
tokens are secrets: kept in the store, never logged, never in an answer.

Layout: ``config.py`` (the keys), ``vcs.py`` (VCS's paths and bodies, the client),
``wire.py`` (the bodies and status mappings; no I/O), ``interface.py`` (the routes VCS
calls), ``admin.py`` (the admin API), ``routes.py`` (what those two share),
``worker.py`` (the worker: the broker-held flows that call VCS).
"""

from vumi_like.applications.conversations.config import VcitaChannelAppConfig
from vumi_like.applications.conversations.vcs import VcsClient, VcsRefused, VcsUnavailable
from vumi_like.applications.conversations.wire import CreateChannelJob
from vumi_like.applications.conversations.worker import ConversationError, VcitaChannelApp

__all__ = [
    "ConversationError",
    "CreateChannelJob",
    "VcitaChannelApp",
    "VcitaChannelAppConfig",
    "VcsClient",
    "VcsRefused",
    "VcsUnavailable",
]
