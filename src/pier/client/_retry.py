"""When to retry a request, and how long to wait first."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

# Errors where the request may not have reached the server, or its answer was lost.
# Retrying them is safe: every endpoint is idempotent and events carry a message_id.
RETRYABLE_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


def is_retryable_status(status: int) -> bool:
    """429 and 5xx are worth another try; any other 4xx will fail the same way again."""
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if seconds == seconds else None  # NaN check


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, honouring ``Retry-After``.

    Retry number ``n`` (0-based) waits a random time in ``[0, min(backoff_max,
    backoff_base * 2**n)]``, or the server's ``Retry-After`` when it sent one (capped at
    ``max_retry_after``).
    """

    max_retries: int = 5
    backoff_base: float = 0.2
    backoff_max: float = 10.0
    max_retry_after: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None) -> float | None:
        """Seconds to sleep before retry number ``retry``, or ``None`` when retries ran out."""
        if retry >= self.max_retries:
            return None
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**retry))
