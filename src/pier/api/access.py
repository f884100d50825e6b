"""The outermost ASGI wrapper: a request id for every request (the client's X-Request-ID when it
is sane, else a new one; sent back as X-Request-ID on every response), one access log line and
the request counter of /metrics. Pure ASGI, so it costs a few microseconds a request."""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics
from .logs import request_id

log = logging.getLogger("pier.access")

HEADER = b"x-request-id"
MAX_PATH = 512  # characters of the path kept in the access line
_SANE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:=+/-]{0,127}")
_KEY_LIKE = re.compile(rb"[ps]k_", re.IGNORECASE)  # never echo what looks like an API key


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
        rid = incoming_id(scope["headers"]) or secrets.token_hex(8)
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
            if log.isEnabledFor(logging.INFO):
                path = scope["path"][:MAX_PATH]  # no query string: it is never logged
                ms = round((time.perf_counter() - started) * 1000, 3)
                log.info(
                    "%s %s %d",
                    method,
                    path,
                    status,
                    extra={"method": method, "path": path, "status": status, "duration_ms": ms},
                )
