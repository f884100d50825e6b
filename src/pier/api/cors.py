"""CORS for browsers: every response carries Access-Control-Allow-Origin: *, and a preflight
OPTIONS answers 204 with the requested headers echoed."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOW_ORIGIN = (b"access-control-allow-origin", b"*")
MAX_AGE = b"86400"
METHODS = b"GET, POST, DELETE, OPTIONS"


class CORS:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await self._preflight(scope, send)
            return

        async def send_with_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), ALLOW_ORIGIN]
            await send(message)

        await self.app(scope, receive, send_with_origin)

    async def _preflight(self, scope: Scope, send: Send) -> None:
        requested = b"authorization, content-type, content-encoding"
        for name, value in scope["headers"]:
            if name == b"access-control-request-headers":
                requested = value
        headers = [
            ALLOW_ORIGIN,
            (b"access-control-allow-methods", METHODS),
            (b"access-control-allow-headers", requested),
            (b"access-control-max-age", MAX_AGE),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
