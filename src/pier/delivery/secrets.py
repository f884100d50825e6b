"""Target keys and signing secrets: sealed for storage (Fernet, keyed by the `secret_key` setting,
when it is set; kept as given otherwise), shown only by their prefix, and the webhook signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

SEALED = "fernet:"  # the mark of an encrypted value
PREFIX_LENGTH = 8


class SecretKeyMissing(Exception):
    """A sealed value cannot be opened: the `secret_key` setting is unset or not the one it was
    sealed with."""


def _fernet(key: str) -> Fernet | None:
    if not key:
        return None
    # imported only when a secret key is set: it costs every process some 7 MB
    from cryptography.fernet import Fernet

    digest = hashlib.sha256(key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(value: str | None, key: str) -> str | None:
    """`value` sealed with `key` (the secret_key setting); as given when `key` is empty."""
    if value is None:
        return None
    fernet = _fernet(key)
    return value if fernet is None else SEALED + fernet.encrypt(value.encode()).decode()


def unseal(stored: str | None, key: str) -> str | None:
    if stored is None or not stored.startswith(SEALED):
        return stored
    fernet = _fernet(key)
    if fernet is None:
        raise SecretKeyMissing(
            "a destination's key is encrypted: set the secret key (--secret-key)"
        )
    from cryptography.fernet import InvalidToken

    try:
        return fernet.decrypt(stored[len(SEALED) :].encode()).decode()
    except InvalidToken:
        raise SecretKeyMissing("the secret key is not the one this value was sealed with") from None


def prefix(value: str | None) -> str | None:
    """What is shown of a key: its first characters, never more than a quarter of it."""
    if value is None:
        return None
    return value[: min(PREFIX_LENGTH, len(value) // 4)] + "…"


def signing_secret() -> str:
    return "whsec_" + random.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Pier-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance: int = 300) -> bool:
    """What a receiver does (docs/destinations.md shows the same in a few lines)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - t) > tolerance:
        return False
    expected = signature(secret, t, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))
