"""What the app's two HTTP surfaces share: bearer-token checks, bodies read into
models, and the answers. Every refusal is an RFC 7807 problem."""

from __future__ import annotations

import hmac
from typing import TypeVar

from pydantic import BaseModel, SecretStr, ValidationError
from quart import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from vumi_like.errors import ProblemError
from vumi_like.validation import describe_validation_error

__all__ = ["no_content", "read_body", "require_bearer"]

B = TypeVar("B", bound=BaseModel)


def require_bearer(secret: SecretStr, realm: str) -> None:
    """401 unless the request has ``Authorization: Bearer <secret>``."""
    given = request.headers.get("Authorization", "")
    scheme, _, credentials = given.partition(" ")
    expected = secret.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.strip().encode(), expected
    ):
        raise ProblemError(
            401,
            "wrong bearer token" if given else "the Authorization header is missing",
            code="unauthorized",
            headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
        )


async def read_body(model: type[B], max_bytes: int) -> B:
    """The request's JSON body as ``model``: 413 over ``max_bytes``, 400 if it does not
    validate (the problem says where)."""
    try:
        raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    except RequestEntityTooLarge:
        raw = None
    # Quart refuses a body over MAX_CONTENT_LENGTH by its Content-Length or, sent
    # chunked, as it is read; the length check is for a server that did not.
    if raw is None or len(raw) > max_bytes:
        raise ProblemError(
            413, f"the body is larger than {max_bytes} bytes", code="body_too_large"
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        detail = describe_validation_error(exc, subject="the body")
        raise ProblemError(400, detail, code="invalid_body") from None


def no_content() -> Response:
    return Response("", 204)
