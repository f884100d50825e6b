"""Exceptions raised by the Pier client."""

from __future__ import annotations

from typing import Any


class PierError(Exception):
    """A request failed for good: a non-retryable answer, or retries ran out.

    ``status`` is the HTTP status (``None`` when no answer came: network error or timeout).
    ``error``, ``errors`` and ``code`` come from the server's JSON error body when there is one;
    ``body`` is that body as parsed JSON (or the raw text when it was not JSON).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after
        details = body if isinstance(body, dict) else {}
        self.error: str | None = details.get("error")
        self.errors: list[dict[str, Any]] = list(details.get("errors") or [])
        self.code: int | None = details.get("code")

    def __str__(self) -> str:
        message = super().__str__()
        return f"HTTP {self.status}: {message}" if self.status is not None else message


class QueueFullError(RuntimeError):
    """``track()`` was called while ``max_queue`` events were still waiting to be delivered."""
