"""Sending one request with retries (sync and async), and delivering a batch of events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from ._retry import RETRYABLE_ERRORS, RetryPolicy, is_retryable_status, parse_retry_after
from ._wire import batch_body, decode, error_from_response, gzip_body, split_rejected
from .errors import PierError

log = logging.getLogger("pier.client")

EVENTS_PATH = "/api/client/events"
USER_AGENT = "pier-python/0.1"

ErrorCallback = Callable[[BaseException, list[dict[str, Any]]], None]


def _client_options(api_key: str, host: str, timeout: float) -> dict[str, Any]:
    return {
        "base_url": host,
        "timeout": timeout,
        "headers": {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        },
    }


def _outcome(response: httpx.Response) -> tuple[PierError, float | None]:
    """The error for a failed response and its Retry-After; raised at once if not retryable."""
    error = error_from_response(response)
    if not is_retryable_status(response.status_code):
        raise error
    error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return error, error.retry_after


def _network_error(exc: Exception) -> PierError:
    error = PierError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class SyncSender:
    def __init__(self, api_key: str, host: str, timeout: float, retry: RetryPolicy) -> None:
        self.retry = retry
        self.http = httpx.Client(**_client_options(api_key, host, timeout))

    def post(self, path: str, raw: bytes) -> None:
        """POST a JSON body (gzipped); return on 2xx, raise ``PierError`` when it fails for good."""
        body = gzip_body(raw)
        retry = 0
        while True:
            retry_after = None
            try:
                response = self.http.post(path, content=body)
            except RETRYABLE_ERRORS as exc:
                error = _network_error(exc)
            else:
                if response.is_success:
                    return
                error, retry_after = _outcome(response)
            delay = self.retry.delay(retry, retry_after)
            if delay is None:
                if retry:
                    error.add_note(f"gave up after {retry} retries")
                raise error
            log.debug("POST %s failed (%s); retry %d in %.2fs", path, error, retry + 1, delay)
            time.sleep(delay)
            retry += 1

    def close(self) -> None:
        self.http.close()


class AsyncSender:
    def __init__(self, api_key: str, host: str, timeout: float, retry: RetryPolicy) -> None:
        self.retry = retry
        self.http = httpx.AsyncClient(**_client_options(api_key, host, timeout))

    async def post(self, path: str, raw: bytes) -> None:
        """Like ``SyncSender.post``."""
        body = gzip_body(raw)
        retry = 0
        while True:
            retry_after = None
            try:
                response = await self.http.post(path, content=body)
            except RETRYABLE_ERRORS as exc:
                error = _network_error(exc)
            else:
                if response.is_success:
                    return
                error, retry_after = _outcome(response)
            delay = self.retry.delay(retry, retry_after)
            if delay is None:
                if retry:
                    error.add_note(f"gave up after {retry} retries")
                raise error
            log.debug("POST %s failed (%s); retry %d in %.2fs", path, error, retry + 1, delay)
            await asyncio.sleep(delay)
            retry += 1

    async def close(self) -> None:
        await self.http.aclose()


def report(on_error: ErrorCallback | None, exc: BaseException, events: list[bytes]) -> None:
    """Events that will not be delivered: log them and hand them to ``on_error``."""
    if not events:
        return
    log.error("Pier: %d event(s) could not be delivered: %s", len(events), exc)
    if on_error is not None:
        try:
            on_error(exc, [decode(e) for e in events])
        except Exception:
            log.exception("Pier: on_error callback raised")


def deliver(sender: SyncSender, events: list[bytes], on_error: ErrorCallback | None) -> None:
    """Send one batch; events rejected for good go to ``report``, the others are sent again."""
    while events:
        try:
            sender.post(EVENTS_PATH, batch_body(events))
            return
        except PierError as exc:
            rejected, events = split_rejected(events, exc)
            report(on_error, exc, rejected)
        except Exception as exc:  # a bug here must not stop the worker or lose events silently
            report(on_error, exc, events)
            return


async def adeliver(
    sender: AsyncSender, events: list[bytes], on_error: ErrorCallback | None
) -> None:
    """Like ``deliver``."""
    while events:
        try:
            await sender.post(EVENTS_PATH, batch_body(events))
            return
        except PierError as exc:
            rejected, events = split_rejected(events, exc)
            report(on_error, exc, rejected)
        except Exception as exc:
            report(on_error, exc, events)
            return
