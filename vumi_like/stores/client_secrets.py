"""OAuth2 client secrets, kept as salted scrypt hashes: ``scrypt$n$r$p$salt$hash``.

A leaked ``clients`` table must not hand out working credentials, so only a hash is
stored, and a slow one: client secrets are long random strings in practice, but nothing
stops an operator from choosing a short one, and scrypt makes guessing those costly. It
is in the standard library (``hashlib.scrypt``), so no dependency is needed.

The parameters travel with each hash, so they can be raised later without breaking the
secrets already stored. n=2**14, r=8 costs about 16 MiB and a few tens of milliseconds
per check, which the token endpoint pays once per token, not once per request.

Checking runs in the store's worker threads (``verify_client``), never on the event loop.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

__all__ = ["hash_secret", "verify_secret"]

_SCHEME = "scrypt"
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32
# Refuse a stored hash whose parameters would cost more than this to check: such a hash
# is not one we wrote, and checking it must not exhaust the machine.
_MAX_MEMORY = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=length
    )


def hash_secret(secret: str) -> str:
    """A new salted hash of ``secret``, as one line of text to store."""
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(secret, salt, _N, _R, _P, _HASH_BYTES)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, stored: str) -> bool:
    """True if ``secret`` is the one ``stored`` was made from; False for anything else.

    A malformed or unsupported ``stored`` is False, not an error: to a caller checking
    credentials, it is a secret that does not match. The final comparison takes the
    same time wherever the digests differ (``hmac.compare_digest``).
    """
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = _unb64(digest)
        actual = _scrypt(secret, _unb64(salt), int(n), int(r), int(p), len(expected))
    except ValueError:  # wrong shape, bad base64, parameters scrypt refuses
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def decoy_hash() -> str:
    """A hash to check against when there is no client, so that "no such client" takes
    as long as "wrong secret" and response times do not reveal which client ids exist."""
    return hash_secret(_b64(os.urandom(_SALT_BYTES)))
