"""``MessagingApi``: one HTTP API to send on every channel, follow statuses, read history.

See ``docs/messaging_api.md`` for the endpoints with examples; ``worker.py`` for the
worker; ``vumi_like.outbound.outbox`` for what happens to an accepted message; ``v1_api.py`` and
``party_api.py`` for the two surfaces (their models in ``v1_models.py`` and
``party_models.py``). Statuses and webhooks come from the event
dispatcher (``vumi_like.dispatch``), which shares this API's connector and store.
"""

from vumi_like.applications.messaging_api.config import MessagingApiConfig
from vumi_like.applications.messaging_api.worker import MessagingApi

__all__ = ["MessagingApi", "MessagingApiConfig"]
