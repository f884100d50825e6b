"""API keys on requests: `Authorization: Bearer <key>`, looked up by hash and cached briefly.

A value that does not have the shape of a key (`domain.keys.generate_key`) is refused before
any lookup, and only keys that exist are cached: unknown keys never grow memory."""

from __future__ import annotations

import re
import time

from starlette.requests import Request

from ..domain.keys import Key, hash_key
from ..store.base import Store
from .edge import header
from .errors import ACCESS_DENIED_CODE, AUTH_CODE, HTTPProblem
from .ratelimit import RateLimiter

CACHE_SECONDS = 2.0  # revocation takes effect everywhere within this (contract: 5 s)
CACHE_ENTRIES = 10_000  # keys that exist: their number is the operator's
KEY_SHAPE = re.compile(r"[ps]k_[0-9a-f]{32}")  # what generate_key makes, and nothing else


def _unauthorized(message: str) -> HTTPProblem:
    return HTTPProblem(401, message, code=AUTH_CODE)


class KeyCache:
    def __init__(self, store: Store, ttl: float = CACHE_SECONDS) -> None:
        self.store = store
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Key]] = {}
        self.limits = RateLimiter()  # per-key requests a second (keys with --rate-limit)

    def cached(self, value: str) -> Key | None:
        """The key with this value while its cache entry is fresh, else None (no query)."""
        hit = self._entries.get(value)  # keyed by the value itself: no hashing on a hit
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    async def fetch(self, value: str) -> Key | None:
        """The key with this value (of a key's shape) from the store, or None. Only found keys
        are cached: an unknown key costs a query each time, never memory."""
        now = time.monotonic()
        key = await self.store.find_key(hash_key(value))
        if key is None:
            self._entries.pop(value, None)
            return None
        if len(self._entries) >= CACHE_ENTRIES:
            self._entries.clear()
        self._entries[value] = (now + self.ttl, key)
        return key

    async def authenticate(self, request: Request, *, secret: bool = False) -> Key:
        """The request's key, or a 401/403 problem."""
        sent = header(request, "authorization")
        if not sent:
            raise _unauthorized("Missing Authorization header: send 'Authorization: Bearer <key>'.")
        scheme, _, value = sent.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise _unauthorized("The Authorization header must use the Bearer scheme.")
        value = value.strip()
        if not value:
            raise _unauthorized("The Authorization header carries no key.")
        key = self.cached(value)  # only values of a key's shape are cached: no check on a hit
        if key is None:
            if not KEY_SHAPE.fullmatch(value):
                raise _unauthorized(
                    "Unknown API key: a key is pk_ or sk_ followed by 32 lowercase hex digits."
                )
            key = await self.fetch(value)
            if key is None:
                raise _unauthorized("Unknown API key.")
        if key.revoked_at is not None:
            raise _unauthorized("This API key has been revoked.")
        if secret and not key.can_read:
            raise HTTPProblem(403, "Access denied.", code=ACCESS_DENIED_CODE)
        if key.rate_limit:
            self.limits.check(key.id, key.rate_limit)  # 429 over the limit
        return key


async def secret_key(request: Request) -> Key:
    """The request's key, which must be a secret one (the read and management routes)."""
    key: Key = await request.app.state.keys.authenticate(request, secret=True)
    return key
