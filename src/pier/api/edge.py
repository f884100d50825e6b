"""The outermost ASGI app, in front of Starlette. For every request: a request id (the client's
X-Request-ID when it is sane, else a new one; sent back on every response), CORS
(`Access-Control-Allow-Origin: *`, and preflights), one access log line and the request counter
of /metrics.

It also dispatches the hot ingestion routes itself (`POST` to an exact path such as
/api/client/events): their endpoints are the same functions Starlette routes to, but called
here they skip the router and its middleware, and a 204 is sent without a Response object.
At thousands of requests a second those layers were a fifth of the server's CPU.

Those endpoints get an `IngestRequest`: the headers they read (INGEST_HEADERS) are found in one
pass over the raw list, and `header()` reads them from there (a Starlette `Headers` scans the
list again for every lookup, and raises and catches a KeyError for every absent header).
Requests the router sends them read `request.headers` as usual, with the same answers."""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.datastructures import State
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..process import metrics
from ..process.logs import request_id
from ..store.base import StoreUnavailable
from .errors import SERVER_ERROR, UNAVAILABLE, HTTPProblem, error_response

log = logging.getLogger("pier.access")

Endpoint = Callable[[Request], Awaitable[Response]]

HEADER = b"x-request-id"
ALLOW_ORIGIN = (b"access-control-allow-origin", b"*")
MAX_AGE = b"86400"
METHODS = b"GET, POST, DELETE, OPTIONS"
MAX_PATH = 512  # characters of the path kept in the access line
DISCONNECTED = 499  # the status counted when the client went away before its answer
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

# The answer an endpoint returns for "committed, nothing to say"; sent here as two bare messages.
NO_CONTENT = Response(status_code=204)


# The headers the ingestion routes read (auth.py, body.py, ingest.py, segment.py): a name not
# listed here read from an IngestRequest is a KeyError, found by any test of that route
INGEST_HEADERS = (
    "authorization",
    "content-type",
    "content-length",
    "content-encoding",
    "idempotency-key",
    "x-sent-at",
)
_RAW_NAMES = {name.encode(): name for name in INGEST_HEADERS}
_NONE_SENT: dict[str, str | None] = dict.fromkeys(INGEST_HEADERS)


class IngestRequest(Request):
    """The Request Edge hands an ingestion endpoint, with `sent`: each of INGEST_HEADERS
    (lowercase) to its first value, as `Headers.get` answers it, or None."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        super().__init__(scope, receive)
        sent = _NONE_SENT.copy()
        for name, value in scope["headers"]:
            key = _RAW_NAMES.get(name)
            if key is not None and sent[key] is None:
                sent[key] = value.decode("latin-1")
        self.sent = sent


class AppState(State):
    """Starlette's `app.state` with each value also an attribute of its own: the ingestion
    routes read `request.app.state.keys`, `.settings` and `.writer` on every request, and
    State answers those through `__getattr__`, a Python call each."""

    def __setattr__(self, key: str, value: Any) -> None:
        super().__setattr__(key, value)
        object.__setattr__(self, key, value)

    def __delattr__(self, key: str) -> None:
        super().__delattr__(key)
        object.__delattr__(self, key)

    __setitem__ = __setattr__
    __delitem__ = __delattr__


def header(request: Request, name: str) -> str | None:
    """The first value of the header `name` (lowercase, one of INGEST_HEADERS), or None."""
    if isinstance(request, IngestRequest):
        return request.sent[name]
    return request.headers.get(name)


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


class Edge:
    def __init__(
        self, app: ASGIApp, fast_routes: Mapping[str, Endpoint], *, log_all: bool = False
    ) -> None:
        self.app = app  # the Starlette app: every other route, and the lifespan
        self.fast_routes = fast_routes  # exact POST path -> endpoint
        # the access_log setting: False ("errors", the default) logs 4xx and 5xx answers only;
        # a line costs 20-30 µs of CPU, a real share of a 2xx request's cost at full speed
        self.log_all = log_all

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = incoming_id(scope["headers"]) or new_id()
        # No reset afterwards: the request's task ends with it, and uvicorn's own error line
        # for a failed request comes after this returns.
        request_id.set(rid)
        extra = [ALLOW_ORIGIN, (HEADER, rid.encode())]
        method = scope["method"]
        root_path = scope.get("root_path", "")
        status = 500  # what uvicorn answers when the app fails before starting a response
        label = None
        try:
            endpoint = self.fast_routes.get(scope["path"]) if method == "POST" else None
            if endpoint is not None:
                label = scope["path"]
                status = await self._dispatch(endpoint, scope, receive, send, extra)
            elif method == "OPTIONS":
                status = await _preflight(scope, send, extra)
            else:

                async def send_with_headers(message: Message) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                        message["headers"] = [*message.get("headers", ()), *extra]
                    await send(message)

                await self.app(scope, receive, send_with_headers)
        finally:
            metrics.count_request(method, label or route_label(scope, root_path), status)
            if (status >= 400 or self.log_all) and log.isEnabledFor(logging.INFO):
                path = scope["path"][:MAX_PATH]  # no query string: it is never logged
                if "k_" in path:  # a key pasted into a URL is not logged either
                    path = _KEY_IN_PATH.sub(r"\1…", path)
                ms = round((time.perf_counter() - started) * 1000, 3)
                _access_line(method, path, status, ms)

    async def _dispatch(
        self,
        endpoint: Endpoint,
        scope: Scope,
        receive: Receive,
        send: Send,
        extra: list[tuple[bytes, bytes]],
    ) -> int:
        """Run an endpoint as Starlette would, with the error handling of its middleware."""
        scope["app"] = self.app  # request.app.state, as under Starlette
        try:
            response = await endpoint(IngestRequest(scope, receive))
        except HTTPProblem as exc:
            response = error_response(exc)
        except StoreUnavailable:  # as errors.store_unavailable under Starlette
            response = error_response(UNAVAILABLE)
        except ClientDisconnect:
            return DISCONNECTED
        except Exception:
            # as Starlette's ServerErrorMiddleware: answer 500, then let uvicorn log it
            response = error_response(SERVER_ERROR)
            response.raw_headers.extend(extra)
            await response(scope, receive, send)
            raise
        if response is NO_CONTENT:
            await send({"type": "http.response.start", "status": 204, "headers": extra})
            await send({"type": "http.response.body", "body": b""})
            return 204
        response.raw_headers.extend(extra)
        await response(scope, receive, send)
        return response.status_code


async def _preflight(scope: Scope, send: Send, extra: list[tuple[bytes, bytes]]) -> int:
    """A CORS preflight: 204, allowing the methods we serve and the headers asked for."""
    requested = b"authorization, content-type, content-encoding"
    for name, value in scope["headers"]:
        if name == b"access-control-request-headers":
            requested = value
    headers = [
        *extra,
        (b"access-control-allow-methods", METHODS),
        (b"access-control-allow-headers", requested),
        (b"access-control-max-age", MAX_AGE),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
    return 204


def _access_line(method: str, path: str, status: int, duration_ms: float) -> None:
    """log.info without its caller lookup (a stack walk): this runs for every request."""
    record = log.makeRecord(log.name, logging.INFO, "", 0, "%s %s %d", (method, path, status), None)
    record.method, record.path, record.status = method, path, status
    record.duration_ms = duration_ms
    log.handle(record)
