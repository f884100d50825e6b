"""The outermost ASGI wrapper: a request id for every request (the client's X-Request-ID when it
is sane, else a new one; sent back as X-Request-ID on every response), one access log line and
the request counter of /metrics. Pure ASGI, so it costs a few microseconds a request."""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics
from .logs import request_id

log = logging.getLogger("pier.access")

HEADER = b"x-request-id"
# `pier serve --access-log`: "errors" (the default) logs 4xx and 5xx answers only; a line costs
# 20-30 µs of CPU, a real share of a 2xx request's cost at full speed. "all" logs every request.
LOG_ALL = os.environ.get("PIER_ACCESS_LOG", "errors") == "all"
MAX_PATH = 512  # characters of the path kept in the access line
_SANE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:=+/-]{0,127}")
_KEY_LIKE = re.compile(rb"[ps]k_", re.IGNORECASE)  # never echo what looks like an API key
_KEY_IN_PATH = re.compile(r"([ps]k_)[0-9A-Za-z]{8,}")
# New ids: 8 random hex digits per process, then a counter (cheaper than 8 random bytes each)
_prefix = secrets.token_hex(4)
_serial = itertools.count()


def _reseed() -> None:
    global _prefix
    _prefix = secrets.token_hex(4)


os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    return f"{_prefix}{next(_serial) & 0xFFFFFFFF:08x}"


def incoming_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's X-Request-ID, when it is 1-128 safe characters and not key-shaped."""
    for name, value in headers:
        if name == HEADER:
            if _SANE.fullmatch(value) and not _KEY_LIKE.search(value):
                return value.decode()
            return None
    return None


def route_label(scope: Scope, root_path: str) -> str:
    """The template of the route that answered (`/api/client/users/{ref}`), never the raw
    path, so the number of series stays bounded."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    prefix = scope.get("root_path", "")[len(root_path) :]  # what a Mount matched
    if isinstance(route, Mount):
        return f"{prefix}/*"
    return prefix + getattr(route, "path", "")


class Access:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = incoming_id(scope["headers"]) or new_id()
        # No reset afterwards: the request's task ends with it, and uvicorn's own error line
        # for a failed request comes after this returns.
        request_id.set(rid)
        header = (HEADER, rid.encode())
        status = 500  # what uvicorn answers when the app fails before starting a response

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        root_path = scope.get("root_path", "")
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            method = scope["method"]
            metrics.count_request(method, route_label(scope, root_path), status)
            if (status >= 400 or LOG_ALL) and log.isEnabledFor(logging.INFO):
                path = scope["path"][:MAX_PATH]  # no query string: it is never logged
                if "k_" in path:  # a key pasted into a URL is not logged either
                    path = _KEY_IN_PATH.sub(r"\1…", path)
                ms = round((time.perf_counter() - started) * 1000, 3)
                _access_line(method, path, status, ms)


def _access_line(method: str, path: str, status: int, duration_ms: float) -> None:
    """log.info without its caller lookup (a stack walk): this runs for every request."""
    record = log.makeRecord(log.name, logging.INFO, "", 0, "%s %s %d", (method, path, status), None)
    record.method, record.path, record.status = method, path, status
    record.duration_ms = duration_ms
    log.handle(record)
