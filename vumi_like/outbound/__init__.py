"""Sending through the channels: the outbox that turns a draft into a stored, queued,
published message. Shared by the applications that send on the Messaging API's channels
(the Messaging API itself, and the Notifications API's fan-out)."""
