"""Reading a request body: content type, gzip, the size limit (the max_body setting, 1 MiB by
default), JSON decoding."""

from __future__ import annotations

import zlib

from starlette.requests import ClientDisconnect, Request

from . import params
from .edge import header
from .errors import HTTPProblem

JSON_TYPES = ("application/json", "text/plain")  # text/plain: what navigator.sendBeacon sends


def _size(limit: int) -> str:
    return f"{limit // 1048576} MiB" if limit % 1048576 == 0 else f"{limit} bytes"


def too_large(limit: int, after: str = "") -> HTTPProblem:
    return HTTPProblem(413, f"The request body is larger than {_size(limit)}{after}.")


def _media_type(request: Request) -> str | None:
    raw = header(request, "content-type")
    if raw is None:
        return None
    return raw.split(";", 1)[0].strip().lower()


async def read_body(request: Request, *, any_type: bool = False) -> bytes:
    """The raw JSON bytes of the body, after the content-type, size and encoding checks.
    `any_type`: whatever the Content-Type says, the body is JSON (the Segment-format routes:
    rudder-sdk-node labels its gzip JSON application/x-www-form-urlencoded)."""
    media = None if any_type else _media_type(request)
    if media is not None and media not in JSON_TYPES:
        raise HTTPProblem(
            415, f"Unsupported Content-Type {media!r}: send application/json or text/plain."
        )
    limit = request.app.state.settings.max_body
    length = header(request, "content-length")
    if (params.integer(length) or 0) > limit:  # (else the read below stops at the limit)
        raise too_large(limit)
    encoding = header(request, "content-encoding")
    encoding = "identity" if encoding is None else encoding.strip().lower()
    if encoding not in ("identity", "gzip"):
        raise HTTPProblem(415, f"Unsupported Content-Encoding {encoding!r}: send gzip or none.")
    body = await _receive(request, limit)
    return _gunzip(body, limit) if encoding == "gzip" else body


async def _receive(request: Request, limit: int) -> bytes:
    """The body's messages straight from the server (request.stream() is an async generator,
    a measurable cost per request); the usual case is one message."""
    receive = request.receive
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress, stopping as soon as the output passes the limit."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise HTTPProblem(400, f"The gzip body is corrupt: {exc}.") from exc
    if len(out) > limit:
        raise too_large(limit, " after decompression")
    if not d.eof:
        raise HTTPProblem(400, "The gzip body is truncated.")
    if d.unused_data:  # garbage, or a second gzip member: never dropped silently
        raise HTTPProblem(400, f"The gzip body has {len(d.unused_data)} bytes after its end.")
    return out
