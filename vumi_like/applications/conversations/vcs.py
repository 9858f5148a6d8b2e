"""Calls to the vcita Communication Service (VCS): every path and body in one place.

The seed gives two of them: creating a channel (``POST /business/communication/channels``
with ``{business_uid, type}``) and a typing indication (``POST
/business/communication/v1/sessions/typing`` with ``{session_uid, typing}``). For the
others it names the fields but not the route; we use the REST shape its own routes
suggest, beside the channel route:

===============================  =============================================  ==========
call                             request                                        answer
===============================  =============================================  ==========
create a channel                 ``POST {base}/business/communication/channels``  uid, status
                                 ``{business_uid, type}``
create a session                 ``POST {base}/business/communication/sessions``  uid, status
                                 ``{business_uid, channel_uid, contact_uid,
                                 external_uid}``
reactivate a session             ``PUT {base}/business/communication/sessions/   status
                                 {session_uid}`` ``{status: "active"}``
create a message                 ``POST {base}/business/communication/messages``  uid, status
                                 ``{message, channel_uid, message_uid,
                                 external_uid}``
update a message's status        ``PUT {base}/business/communication/messages/   -
                                 {message_uid}`` ``{status, channel_uid}``
typing                           ``POST {base}/business/communication/v1/        -
                                 sessions/typing`` ``{session_uid, typing}``
===============================  =============================================  ==========

Every request carries ``Authorization: Bearer <the business's access token>``: VCS knows
the communication app by its token. ``contact_uid`` is null: a client who writes in
over a transport is known to us by their address only (``external_uid``), and VCS
links the session to its contact.

Answers. A created entity is read from the JSON answer, bare (``{"uid", "status"}``) or
wrapped as vcita's APIs wrap them (``{"data": {...}}``, or ``{"data": {"channel":
{...}}}``); its id may be called ``uid`` or ``<entity>_uid``. A 409 to a message create
means VCS has that ``message_uid`` already: a retry of a post that got through, so it
counts as done. That is what makes ``message_uid`` an idempotency key.

Failures. A connection error, a timeout, 408, 429 or 5xx is ``VcsUnavailable``
(retry later, with the ``Retry-After`` it gave); any other 4xx, or a success answer
without the uid we need, is ``VcsRefused`` (asking again would not help). Neither
message holds the token.
"""

from __future__ import annotations

from typing import Any

import attrs
import httpx
import trio

from vumi_like.retry import retry_after_seconds

__all__ = [
    "CHANNELS",
    "MESSAGES",
    "SESSIONS",
    "TYPING",
    "Created",
    "VcsClient",
    "VcsError",
    "VcsRefused",
    "VcsUnavailable",
]

CHANNELS = "/business/communication/channels"
SESSIONS = "/business/communication/sessions"
MESSAGES = "/business/communication/messages"
TYPING = "/business/communication/v1/sessions/typing"

# Statuses a retry can cure: VCS is busy, overloaded or briefly broken.
_RETRYABLE = frozenset({408, 429})


class VcsError(Exception):
    """A call to VCS failed."""


class VcsUnavailable(VcsError):
    """VCS could not be reached, or answered that it cannot take the call now."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class VcsRefused(VcsError):
    """VCS refused the call for good, or answered it in a way we cannot use."""


@attrs.frozen
class Created:
    """An entity VCS created (or found): its uid and the status it gave."""

    uid: str
    status: str | None


class VcsClient:
    """VCS at ``base_url``; ``timeout`` bounds each call as a whole (seconds)."""

    def __init__(self, base_url: str, timeout: float, client: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.client = client

    async def create_channel(self, token: str, business_uid: str, channel_type: str) -> Created:
        body = {"business_uid": business_uid, "type": channel_type}
        return _created(await self._call("POST", CHANNELS, token, body), "channel")

    async def create_session(
        self, token: str, business_uid: str, channel_uid: str, external_uid: str
    ) -> Created:
        body = {
            "business_uid": business_uid,
            "channel_uid": channel_uid,
            "contact_uid": None,
            "external_uid": external_uid,
        }
        return _created(await self._call("POST", SESSIONS, token, body), "session")

    async def activate_session(self, token: str, session_uid: str) -> str | None:
        """Ask VCS to make the session active again; the status it answers, if any."""
        answer = await self._call("PUT", f"{SESSIONS}/{session_uid}", token, {"status": "active"})
        return _entity(answer, "session").get("status")

    async def create_message(
        self, token: str, channel_uid: str, message_uid: str, external_uid: str, message: str
    ) -> str | None:
        """Post a client's message; the status VCS gives it (None: already there)."""
        body = {
            "message": message,
            "channel_uid": channel_uid,
            "message_uid": message_uid,
            "external_uid": external_uid,
        }
        answer = await self._call("POST", MESSAGES, token, body, done_if_conflict=True)
        return None if answer is None else _entity(answer, "message").get("status")

    async def update_message_status(
        self, token: str, message_uid: str, channel_uid: str, status: str
    ) -> None:
        body = {"status": status, "channel_uid": channel_uid}
        await self._call("PUT", f"{MESSAGES}/{message_uid}", token, body)

    async def typing(self, token: str, session_uid: str, typing: bool) -> None:
        await self._call("POST", TYPING, token, {"session_uid": session_uid, "typing": typing})

    async def _call(
        self,
        method: str,
        path: str,
        token: str,
        body: dict[str, Any],
        *,
        done_if_conflict: bool = False,
    ) -> Any:
        """The JSON answer (None for an empty one, or a 409 that means done)."""
        where = f"{method} {self.base_url}{path}"
        try:
            # httpx's timeout bounds each phase; the cancel scope bounds the whole.
            with trio.fail_after(self.timeout):
                response = await self.client.request(
                    method,
                    self.base_url + path,
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=self.timeout,
                )
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            raise VcsUnavailable(
                f"{where} failed: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from None
        status = response.status_code
        if done_if_conflict and status == 409:
            return None
        if status >= 500 or status in _RETRYABLE:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise VcsUnavailable(f"{where} answered {status}: {response.text[:200]}", retry_after)
        if not response.is_success:
            raise VcsRefused(f"{where} answered {status}: {response.text[:200]}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise VcsRefused(f"{where} answered {status} with a body that is not JSON") from None


def _entity(answer: Any, name: str) -> dict[str, Any]:
    """The entity in an answer: bare, under ``data``, or under ``data.<name>``."""
    found = answer
    if isinstance(found, dict) and isinstance(found.get("data"), dict):
        found = found["data"]
    if isinstance(found, dict) and isinstance(found.get(name), dict):
        found = found[name]
    return found if isinstance(found, dict) else {}


def _created(answer: Any, name: str) -> Created:
    entity = _entity(answer, name)
    uid = entity.get("uid", entity.get(f"{name}_uid"))
    if not isinstance(uid, str) or not uid:
        raise VcsRefused(f"VCS created a {name} but its answer has no uid: {str(answer)[:200]}")
    status = entity.get("status")
    return Created(uid, status if isinstance(status, str) else None)
