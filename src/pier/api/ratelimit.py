"""Per-key rate limits: a token bucket per API key, kept in each server process.

A key created with `pier keys create ... --rate-limit N` may make N requests a second, and up to
N at once after a quiet second (the bucket holds N tokens and refills at N a second). Keys
without a limit pay nothing here.

Each process enforces the limit on its own, without shared state: with `--workers W` the server
as a whole admits at most W x N a second. We chose that over N/W per worker because a client's
keep-alive connection stays on one worker, so N/W would refuse a well-behaved client that sends
N a second. The limit is a guard against runaway clients, not a meter.

Over the limit: 429 with Retry-After and the IETF draft's RateLimit-Limit, RateLimit-Remaining
and RateLimit-Reset headers (draft-ietf-httpapi-ratelimit-headers), plus RateLimit-Policy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .errors import HTTPProblem

MAX_BUCKETS = 100_000  # keys tracked at once; full (idle) buckets are dropped beyond this


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[int, list[float]] = {}  # key id -> [tokens, refilled at]

    def check(self, key_id: int, rate: int) -> None:
        """Take a token for one request of this key, or raise a 429 problem."""
        now = self.clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._forget_idle(now)
            bucket = self._buckets[key_id] = [float(rate), now]
        tokens = min(float(rate), bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return
        bucket[0] = tokens
        raise too_many(rate, (1.0 - tokens) / rate)

    def remaining(self, key_id: int, rate: int) -> int:
        """Requests this key may still make right now (for tests and diagnostics)."""
        bucket = self._buckets.get(key_id)
        if bucket is None:
            return rate
        return int(min(float(rate), bucket[0] + (self.clock() - bucket[1]) * rate))

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes nothing."""
        for key_id, (_, at) in list(self._buckets.items()):
            if now - at >= 1.0:  # a second refills any bucket
                del self._buckets[key_id]
        if len(self._buckets) >= MAX_BUCKETS:  # all busy: start over rather than grow
            self._buckets.clear()


def too_many(rate: int, wait: float) -> HTTPProblem:
    """429 with Retry-After and the RateLimit-* headers; `wait` is seconds until a token."""
    seconds = str(max(1, math.ceil(wait)))
    headers = {
        "Retry-After": seconds,
        "RateLimit-Limit": str(rate),
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": seconds,
        "RateLimit-Policy": f"{rate};w=1",
    }
    return HTTPProblem(
        429,
        f"Rate limit exceeded: this key may make {rate} requests a second; retry in {seconds} s.",
        headers=headers,
    )
