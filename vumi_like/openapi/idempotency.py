"""``Idempotency-Key``: the same request sent twice is answered twice, and acted on once.

A client that did not hear back (a timeout, a dropped connection) cannot know whether
its message went out. Sending it again with the same ``Idempotency-Key`` is safe: within
24 hours, the same key with the same request (method, path and body) gets the first
answer again, with ``Idempotent-Replayed: true``, and nothing new is sent. The same key
with a different request is a 422: a key names one request. A second request arriving
while the first is still being handled is a 409 with ``Retry-After``. "Still being
handled" has a bound: a replica killed in the middle of a request never answers it nor
frees its key, so a claim left in progress past ``abandoned_after`` (longer than a live
request may run) is taken over by the next request with the key. The same request
resumes the claim: the work is given the claim's ``RequestIds``, the ids the dead run
gave what it stored, so it finds that and finishes it (publishes what is still
queued) rather than storing it again. The dead replica may have published a message
already; it is then sent twice under its one id (at-least-once), never lost.

The key is claimed in the store before any work, by an insert that only one replica can
win (a primary key on the key's owner and the key), so this holds across replicas. When
the work fails (a 4xx the client can correct, a 503), the claim is released so the
client may try again with the same key. A request saves its answer or releases the key
only while its own claim holds it: one that outlived its claim (a process stopped past
``abandoned_after``) leaves alone the retry that took it over, and answers its own
client with what it did.

A key belongs to whoever may read the answer it replays: a Messaging API key to its
tenant, a Notifications API key to the user who sent it (``owner``).

``answer_once`` runs a sending route this way: within the route's time limit, its
answer a finished ``Response``. Each route documents the header with
``@document_headers(IdempotencyHeaders)``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio
from pydantic import BaseModel, Field
from quart import Response, request

from vumi_like.errors import ProblemError
from vumi_like.openapi.http import json_response
from vumi_like.stores import (
    ClaimLost,
    ClaimOutcome,
    MessageStore,
    RequestIds,
    StoreError,
    StoreUnavailable,
)

__all__ = [
    "IDEMPOTENCY_HEADER",
    "REPLAYED_HEADER",
    "IdempotencyHeaders",
    "answer_once",
    "idempotent",
]

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# A live request ends within its route's time limit, and frees its key if it failed
# within 7 s more (2 s to mark what it did not send, ``outbox.py``, 5 s to free the
# key): a claim older than the limit and this margin was abandoned.
ABANDONED_CLAIM_MARGIN = 10  # seconds

Answer = tuple[Any, int]


class IdempotencyHeaders(BaseModel):
    """The header every sending route takes, as its OpenAPI operation documents it."""

    # Optional all the same: the model only documents the header, it validates nothing.
    idempotency_key: str = Field(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Sending again with the same key and body within 24 h returns the "
        "first answer (with Idempotent-Replayed: true) and sends nothing new; the same key "
        "with another request is a 422, and while the first is still being handled a 409",
    )


async def answer_once(
    store: MessageStore,
    owner: str,
    work: Callable[[RequestIds], Awaitable[Answer]],
    *,
    time_limit: float,
) -> Response:
    """Run the current request's ``work`` once per ``Idempotency-Key`` of ``owner``,
    within ``time_limit`` seconds (then 503 ``TIMEOUT``); its answer as JSON. ``work``
    gives what it stores the ids it is given (``RequestIds``)."""
    body: bytes = await request.get_data(as_text=False)  # type: ignore[assignment]
    fingerprint = f"{request.method} {request.path}\n".encode() + body
    try:
        with trio.fail_after(time_limit):
            answer, status, headers = await idempotent(
                store,
                owner,
                request.headers.get(IDEMPOTENCY_HEADER),
                fingerprint,
                work,
                abandoned_after=time_limit + ABANDONED_CLAIM_MARGIN,
            )
            return json_response(answer, status, headers)
    except trio.TooSlowError:
        raise ProblemError(
            503,
            f"the request was not accepted within {time_limit:g} s; "
            f"retry it with the same {IDEMPOTENCY_HEADER}",
            code="TIMEOUT",
            retry_after=1,
        ) from None
    except StoreError as exc:
        if isinstance(exc, StoreUnavailable):
            raise
        raise ProblemError(
            500, f"the store refused the request: {exc}", code="INTERNAL_ERROR"
        ) from exc


async def idempotent(
    store: MessageStore,
    owner: str,
    key: str | None,
    fingerprint: bytes,
    work: Callable[[RequestIds], Awaitable[Answer]],
    *,
    abandoned_after: float | None = None,
) -> tuple[Any, int, dict[str, str]]:
    """``work(ids)``'s answer (body, status) and extra headers, once per key and request."""
    if key is None:
        body, status = await work(RequestIds())
        return body, status, {}
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ProblemError(
            400,
            f"{IDEMPOTENCY_HEADER} should be 1 to {MAX_KEY_LENGTH} characters",
            code="VALIDATION_FAILED",
        )
    request_hash = hashlib.sha256(fingerprint).hexdigest()
    claim = await store.claim_idempotency_key(
        owner, key, request_hash, abandoned_after=abandoned_after
    )
    if claim.outcome == ClaimOutcome.REPLAY:
        assert claim.response_status is not None
        return claim.response_body, claim.response_status, {REPLAYED_HEADER: "true"}
    if claim.outcome == ClaimOutcome.IN_PROGRESS:
        raise ProblemError(
            409,
            f"a request with this {IDEMPOTENCY_HEADER} is being handled; try again shortly",
            code="IDEMPOTENCY_KEY_IN_USE",
            retry_after=1,
        )
    if claim.outcome == ClaimOutcome.MISMATCH:
        raise ProblemError(
            422,
            f"this {IDEMPOTENCY_HEADER} was used for a different request",
            code="IDEMPOTENCY_KEY_REUSED",
        )
    try:
        body, status = await work(claim.request_ids())
    except BaseException:
        # Shielded and bounded: a cancelled request still frees its key. A store that
        # cannot be reached keeps the claim, and the original error is what is raised;
        # the claim is freed when it expires.
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(5),
            contextlib.suppress(StoreError),
        ):
            await store.release_idempotency_key(owner, key, claimed_at=claim.claimed_at)
        raise
    try:
        await store.save_idempotent_response(owner, key, status, body, claimed_at=claim.claimed_at)
    except ClaimLost:
        # Outlived its claim, which a retry took over: that retry's answer is the one
        # kept. This one is still true of what this run did, and its client may be there.
        log.warning("idempotency claim taken over before the answer", owner=owner, key=key)
    return body, status, {}
