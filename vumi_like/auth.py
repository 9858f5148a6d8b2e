"""OAuth2 client credentials (RFC 6749 section 4.4) and the JWT bearer tokens they buy.

A client system authenticates once at ``POST /oauth/token`` with its id and secret and
gets an access token valid for ``expires_in`` seconds; every API call then carries
``Authorization: Bearer <token>``. The token says which client it was issued to and
which tenant that client belongs to, and every resource is scoped to that tenant.

Why a hand-written token endpoint: it is small (one grant type, two ways to present
the client's credentials), and the libraries that offer a server side target Flask or
Django, not Quart. What is easy to get wrong is in one place here:

* the client may authenticate with HTTP Basic or with ``client_id``/``client_secret``
  form fields, but not both at once (section 2.3); id and secret in Basic are
  form-urlencoded before base64 (section 2.3.1), so ``%3A`` in an id is a colon;
* a failed client authentication is ``401 invalid_client`` and, when the client tried
  Basic, carries ``WWW-Authenticate: Basic`` (section 5.2); token answers are never
  cached (``Cache-Control: no-store``, section 5.1);
* secrets are compared in constant time (config clients) or as salted hashes (clients
  in the store), so a wrong guess takes as long as a right one;
* tokens are JWTs signed with HS256 and checked with a fixed algorithm list (a token
  may not choose its own algorithm, ``none`` included); ``exp``, ``iat``, ``aud``,
  ``iss`` and ``sub`` are required, so a token minted for another audience or without
  an expiry is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote_plus

import attrs
import jwt
from pydantic import Field, SecretStr, field_validator
from quart import Response

from vumi_like.config import ConfigModel
from vumi_like.errors import PROBLEM_CONTENT_TYPE, problem_body

__all__ = [
    "ALGORITHMS",
    "AuthSettings",
    "ClientConfig",
    "OAuthError",
    "Principal",
    "TokenService",
    "client_credentials",
]

# The only algorithm tokens are signed and accepted with.
ALGORITHMS = ["HS256"]


class ClientConfig(ConfigModel):
    """A client given in the config (others live in the store: ``vumi-like clients``)."""

    client_id: str = Field(description="The client's id")
    client_secret: SecretStr = Field(description="The client's secret")
    tenant: str = Field(description="Tenant whose resources the client works with")


class AuthSettings(ConfigModel):
    """The ``auth`` key of a worker that serves an authenticated API."""

    jwt_secret: SecretStr = Field(description="Key that signs access tokens (32+ characters)")
    expires_in: int = Field(
        default=3600, ge=60, description="Seconds an access token is valid (expires_in)"
    )
    audience: str = Field(default="vumi-like", description="aud claim of issued tokens")
    issuer: str = Field(default="vumi-like", description="iss claim of issued tokens")
    clients: list[ClientConfig] = Field(
        default_factory=list, description="Clients known from config, beside the store's"
    )

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value()) < 32:
            raise ValueError("should be at least 32 characters (HS256 wants a 256-bit key)")
        return secret


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error: ``error`` code, HTTP status, and a description."""

    def __init__(
        self, error: str, description: str, *, status: int = 400, basic_challenge: bool = False
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.basic_challenge = basic_challenge


def oauth_error_response(error: OAuthError) -> Response:
    """``error`` as both an RFC 7807 problem and an RFC 6749 error response, with the
    ``WWW-Authenticate`` challenge it calls for."""
    headers = {"Cache-Control": "no-store"}
    if error.error == "invalid_token":
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    elif error.basic_challenge:
        headers["WWW-Authenticate"] = 'Basic realm="vumi-like"'
    code = "UNAUTHORIZED" if error.status == 401 else "VALIDATION_FAILED"
    body = problem_body(error.status, error.description, code=code)
    body.update(error=error.error, error_description=error.description)
    return Response(
        json.dumps(body), status=error.status, content_type=PROBLEM_CONTENT_TYPE, headers=headers
    )


@attrs.frozen
class Principal:
    """Who is calling: the client a verified token was issued to, and its tenant."""

    client_id: str
    tenant: str


def client_credentials(
    authorization: str | None, form: Mapping[str, str]
) -> tuple[str, str, bool]:
    """The client's ``(id, secret, used_basic)`` from a token request, or ``OAuthError``."""
    form_id, form_secret = form.get("client_id"), form.get("client_secret")
    if authorization and authorization[:6].lower() == "basic ":
        if form_secret is not None:
            raise OAuthError(
                "invalid_request", "authenticate with HTTP Basic or with form fields, not both"
            )
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError(
                "invalid_client", "malformed Basic credentials", status=401, basic_challenge=True
            ) from None
        client_id, colon, secret = decoded.partition(":")
        if not colon:
            raise OAuthError(
                "invalid_client", "malformed Basic credentials", status=401, basic_challenge=True
            )
        return unquote_plus(client_id), unquote_plus(secret), True
    if form_id is None or form_secret is None:
        raise OAuthError(
            "invalid_client",
            "client authentication is required (HTTP Basic, or client_id and client_secret)",
            status=401,
            basic_challenge=True,
        )
    return form_id, form_secret, False


# Looks a client up elsewhere (the store): its tenant, or None if the id or secret is wrong.
ClientVerifier = Callable[[str, str], Awaitable[str | None]]


# Tokens verified lately, kept with their expiry: a client sends the same token with
# every request, and decoding and checking it each time was most of what
# authenticating a request cost.
VERIFIED_TOKENS = 10_000


class TokenService:
    """Issues and verifies access tokens; authenticates clients against config and store."""

    def __init__(self, settings: AuthSettings, verify_stored: ClientVerifier | None = None):
        self.settings = settings
        self._key = settings.jwt_secret.get_secret_value()
        self._config_clients = {client.client_id: client for client in settings.clients}
        self._verify_stored = verify_stored
        # token -> (who it proves, its exp): only tokens that verified, until they expire
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, client_id: str, secret: str, *, used_basic: bool) -> str:
        """The tenant of the client these credentials prove, or ``OAuthError`` 401."""
        configured = self._config_clients.get(client_id)
        if configured is not None:
            expected = configured.client_secret.get_secret_value().encode()
            if hmac.compare_digest(secret.encode(), expected):
                return configured.tenant
        elif self._verify_stored is not None:
            tenant = await self._verify_stored(client_id, secret)
            if tenant is not None:
                return tenant
        raise OAuthError(
            "invalid_client",
            "unknown client or wrong secret",
            status=401,
            basic_challenge=used_basic,
        )

    def issue(self, client_id: str, tenant: str, *, now: float | None = None) -> dict[str, Any]:
        """An RFC 6749 section 5.1 token response for this client."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.settings.issuer,
            "sub": client_id,
            "aud": self.settings.audience,
            "iat": issued,
            "exp": issued + self.settings.expires_in,
            "jti": uuid.uuid4().hex,
            "tenant": tenant,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHMS[0])
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.settings.expires_in,
        }

    def verify(self, authorization: str | None) -> Principal:
        """The caller a ``Bearer`` header proves, or ``OAuthError`` 401 ``invalid_token``."""
        if not authorization or authorization[:7].lower() != "bearer ":
            raise OAuthError(
                "invalid_token", "an Authorization: Bearer <token> header is required", status=401
            )
        token = authorization[7:].strip()
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            del self._verified[token]  # expired: decoding it again says so
        principal, expires = self._decode(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (principal, expires)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=ALGORITHMS,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                options={"require": ["exp", "iat", "aud", "iss", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise OAuthError("invalid_token", "the access token has expired", status=401) from None
        except jwt.InvalidTokenError as exc:
            raise OAuthError(
                "invalid_token", f"the access token is not valid: {exc}", status=401
            ) from None
        tenant = claims.get("tenant")
        if not isinstance(tenant, str) or not tenant:
            raise OAuthError("invalid_token", "the access token names no tenant", status=401)
        return Principal(client_id=str(claims["sub"]), tenant=tenant), float(claims["exp"])
