"""OAuth2 client credentials and JWT access tokens (RFC 6749 section 4.4, RFC 7519)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from urllib.parse import quote_plus

import jwt
import pytest

from vumi_like.auth import AuthSettings, OAuthError, TokenService, client_credentials

KEY = "k" * 40


def settings(**fields: object) -> AuthSettings:
    return AuthSettings.model_validate(
        {
            "jwt_secret": KEY,
            "clients": [{"client_id": "demo", "client_secret": "demo-secret", "tenant": "t1"}],
            **fields,
        }
    )


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def test_credentials_come_from_basic_or_from_form_fields():
    assert client_credentials(basic("a:b", "s%x"), {}) == ("a:b", "s%x", True)
    form = {"client_id": "demo", "client_secret": "s"}
    assert client_credentials(None, form) == ("demo", "s", False)


@pytest.mark.parametrize(
    ("authorization", "form", "error", "status"),
    [
        (basic("a", "b"), {"client_secret": "s"}, "invalid_request", 400),
        ("Basic !!!", {}, "invalid_client", 401),
        ("Basic " + base64.b64encode(b"no-colon").decode(), {}, "invalid_client", 401),
        (None, {"client_id": "demo"}, "invalid_client", 401),
        (None, {}, "invalid_client", 401),
    ],
)
def test_malformed_client_authentication_is_an_oauth_error(
    authorization: str | None, form: dict[str, str], error: str, status: int
):
    with pytest.raises(OAuthError) as raised:
        client_credentials(authorization, form)
    assert (raised.value.error, raised.value.status) == (error, status)


async def test_config_clients_and_stored_clients_authenticate():
    async def stored(client_id: str, secret: str) -> str | None:
        return "t2" if (client_id, secret) == ("stored", "pw") else None

    service = TokenService(settings(), stored)
    assert await service.authenticate("demo", "demo-secret", used_basic=False) == "t1"
    assert await service.authenticate("stored", "pw", used_basic=True) == "t2"
    for client_id, secret in [("demo", "wrong"), ("stored", "wrong"), ("nobody", "x")]:
        with pytest.raises(OAuthError) as raised:
            await service.authenticate(client_id, secret, used_basic=True)
        assert (raised.value.error, raised.value.status) == ("invalid_client", 401)
        assert raised.value.basic_challenge


def test_an_issued_token_verifies_as_its_client_and_tenant():
    service = TokenService(settings(expires_in=600))
    answer = service.issue("demo", "t1")
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 600
    principal = service.verify(f"Bearer {answer['access_token']}")
    assert (principal.client_id, principal.tenant) == ("demo", "t1")


def test_a_verified_token_is_remembered_until_it_expires():
    service = TokenService(settings())
    token = forged(exp=int(time.time()) + 2)
    first = service.verify(f"Bearer {token}")
    assert service.verify(f"Bearer {token}") is first  # not decoded again
    time.sleep(
        max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] - time.time())
        + 0.05
    )
    with pytest.raises(OAuthError) as raised:
        service.verify(f"Bearer {token}")
    assert "expired" in raised.value.description


def test_the_remembered_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("vumi_like.auth.VERIFIED_TOKENS", 3)
    service = TokenService(settings())
    tokens = [forged(sub=f"client-{i}") for i in range(5)]
    for token in tokens:
        service.verify(f"Bearer {token}")
    assert list(service._verified) == tokens[2:]


def forged(**changes: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "vumi-like",
        "sub": "demo",
        "aud": "vumi-like",
        "iat": now,
        "exp": now + 60,
        "tenant": "t1",
    }
    algorithm = str(changes.pop("algorithm", "HS256"))
    key = str(changes.pop("key", KEY))
    claims.update(changes)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key, algorithm=algorithm)


# Tokens are made in the test, not at collection: a long run must not expire them.
BAD_HEADERS: dict[str, tuple[Callable[[], str | None], str]] = {
    "missing": (lambda: None, "required"),
    "basic": (lambda: "Basic abc", "required"),
    "garbage": (lambda: "Bearer not-a-jwt", "not valid"),
    "expired": (lambda: f"Bearer {forged(exp=int(time.time()) - 10)}", "expired"),
    "other-audience": (lambda: f"Bearer {forged(aud='someone-else')}", "not valid"),
    "other-issuer": (lambda: f"Bearer {forged(iss='someone-else')}", "not valid"),
    "no-expiry": (lambda: f"Bearer {forged(exp=None)}", "not valid"),
    "no-tenant": (lambda: f"Bearer {forged(tenant=None)}", "no tenant"),
    "other-key": (lambda: f"Bearer {forged(key='x' * 40)}", "not valid"),
    "other-algorithm": (
        lambda: f"Bearer {forged(algorithm='HS512', key='k' * 64)}",
        "not valid",
    ),
    "alg-none": (lambda: f"Bearer {forged(algorithm='none', key='')}", "not valid"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_a_bad_bearer_token_is_refused(case: str):
    make_header, reason = BAD_HEADERS[case]
    with pytest.raises(OAuthError) as raised:
        TokenService(settings()).verify(make_header())
    assert (raised.value.error, raised.value.status) == ("invalid_token", 401)
    assert reason in raised.value.description


def test_a_short_signing_key_is_a_config_error():
    with pytest.raises(ValueError, match="at least 32 characters"):
        settings(jwt_secret="short")
