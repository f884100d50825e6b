"""Projects and API keys: generation, hashing, scopes."""

from __future__ import annotations

import hashlib
import secrets

import msgspec

PUBLIC = "public"
SECRET = "secret"
SCOPES = (PUBLIC, SECRET)
_PREFIX = {PUBLIC: "pk_", SECRET: "sk_"}


class Project(msgspec.Struct):
    id: int
    name: str
    created_at: int


class Key(msgspec.Struct):
    id: int
    project_id: int
    name: str | None
    scope: str
    prefix: str  # the first characters, to recognise a key without its value
    created_at: int
    revoked_at: int | None = None
    value: str | None = None  # kept for public keys only
    rate_limit: int | None = None

    @property
    def can_read(self) -> bool:
        return self.scope == SECRET


def generate_key(scope: str) -> str:
    """A new key value: scope prefix + 32 hex characters from a CSPRNG."""
    return _PREFIX[scope] + secrets.token_hex(16)


def hash_key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
