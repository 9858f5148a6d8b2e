"""What the Messaging API and the event dispatcher share: channels and webhooks.

The two are separate workers (``applications/messaging_api``, ``dispatch/``) that
never import each other; what both must agree on lives here, below them.
"""
