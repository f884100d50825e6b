"""Request bodies: building, validating and encoding them (msgspec JSON, gzip)."""

from __future__ import annotations

import gzip
import re
import uuid
from datetime import datetime
from typing import Any

import httpx
import msgspec

from .errors import PierError

# The server rejects bodies over 1 MiB (after decompression); stay below that per request.
MAX_BODY_BYTES = 1_000_000
# The server accepts at most this many events in one request.
MAX_EVENTS_PER_REQUEST = 1000


class _Clear:
    """Type of ``CLEAR``."""

    def __repr__(self) -> str:
        return "CLEAR"


CLEAR: Any = _Clear()
"""Pass as a field's value to send it as ``null``, which clears it on the server."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode(raw: bytes) -> Any:
    return _decoder.decode(raw)


def gzip_body(raw: bytes) -> bytes:
    return gzip.compress(raw, compresslevel=6, mtime=0)


def _fields(**fields: Any) -> dict[str, Any]:
    """Keep the fields that were given: ``None`` is left out, ``CLEAR`` becomes ``null``."""
    return {k: (None if v is CLEAR else v) for k, v in fields.items() if v is not None}


def _require_id(external_id: str | None, anonymous_id: str | None) -> None:
    if not (isinstance(external_id, str) and external_id) and not (
        isinstance(anonymous_id, str) and anonymous_id
    ):
        raise ValueError("external_id or anonymous_id is required (a non-empty string)")


def identify_body(
    external_id: str | None,
    anonymous_id: str | None,
    email: str | None,
    phone: str | None,
    timezone: str | None,
    locale: str | None,
    data: dict[str, Any] | None,
) -> bytes:
    _require_id(external_id, anonymous_id)
    body = _fields(
        external_id=external_id,
        anonymous_id=anonymous_id,
        email=email,
        phone=phone,
        timezone=timezone,
        locale=locale,
        data=data,
    )
    return encode(body)


def alias_body(anonymous_id: str, external_id: str) -> bytes:
    for name, value in (("anonymous_id", anonymous_id), ("external_id", external_id)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
    return encode({"anonymous_id": anonymous_id, "external_id": external_id})


def device_body(
    device_id: str,
    os: str,
    model: str,
    app_build: str,
    app_version: str,
    external_id: str | None,
    anonymous_id: str | None,
    token: str | None,
    os_version: str | None,
    extra: dict[str, Any],
) -> bytes:
    _require_id(external_id, anonymous_id)
    body = {
        **extra,
        "device_id": device_id,
        "os": os,
        "model": model,
        "app_build": app_build,
        "app_version": app_version,
        **_fields(
            external_id=external_id, anonymous_id=anonymous_id, token=token, os_version=os_version
        ),
    }
    return encode(body)


def format_timestamp(when: datetime) -> str:
    """ISO-8601 with an offset; a naive datetime is taken as local time."""
    if when.tzinfo is None:
        when = when.astimezone()
    return when.isoformat(timespec="milliseconds")


def event_bytes(
    name: str,
    external_id: str | None,
    anonymous_id: str | None,
    data: dict[str, Any] | None,
    timestamp: datetime | None,
) -> tuple[str, bytes]:
    """One event: its fresh ``message_id`` (retries are deduplicated on it) and its JSON."""
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    _require_id(external_id, anonymous_id)
    if data is not None and not isinstance(data, dict):
        raise TypeError("data must be a dict or None")
    if timestamp is not None and not isinstance(timestamp, datetime):
        raise TypeError("timestamp must be a datetime or None")
    event = _fields(name=name, external_id=external_id, anonymous_id=anonymous_id, data=data)
    message_id = str(uuid.uuid4())
    event["message_id"] = message_id
    event["timestamp"] = format_timestamp(timestamp or datetime.now().astimezone())
    raw = encode(event)  # encoding now surfaces unserialisable data to the caller
    if len(raw) + 2 > MAX_BODY_BYTES:
        raise ValueError(f"event is {len(raw)} bytes encoded; the limit is {MAX_BODY_BYTES}")
    return message_id, raw


def batch_body(events: list[bytes]) -> bytes:
    return b"[" + b",".join(events) + b"]"


def batch_fits(events: list[bytes], nbytes: int, extra: bytes) -> bool:
    """Whether ``extra`` can join a batch of ``events`` (``nbytes`` long) within the body limit."""
    return nbytes + len(extra) + len(events) + 2 <= MAX_BODY_BYTES


def check_options(max_batch: int, flush_interval: float, max_queue: int, max_retries: int) -> None:
    if not 1 <= max_batch <= MAX_EVENTS_PER_REQUEST:
        raise ValueError(f"max_batch must be between 1 and {MAX_EVENTS_PER_REQUEST}")
    if flush_interval <= 0:
        raise ValueError("flush_interval must be positive")
    if max_queue < 1:
        raise ValueError("max_queue must be at least 1")
    if max_retries < 0:
        raise ValueError("max_retries must not be negative")


def chunks(events: list[bytes], max_batch: int) -> list[list[bytes]]:
    """Split events into batches within ``max_batch`` and the body limit."""
    batches: list[list[bytes]] = [[]]
    nbytes = 0
    for event in events:
        batch = batches[-1]
        if len(batch) >= max_batch or (batch and not batch_fits(batch, nbytes, event)):
            batches.append([])
            nbytes = 0
        batches[-1].append(event)
        nbytes += len(event)
    return [b for b in batches if b]


def error_from_response(response: httpx.Response) -> PierError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    message = body.get("error") if isinstance(body, dict) else None
    return PierError(
        str(message or body or response.reason_phrase),
        status=response.status_code,
        body=body,
    )


_EVENT_PATH = re.compile(r"^/(\d+)(?:/|$)")


def split_rejected(events: list[bytes], error: PierError) -> tuple[list[bytes], list[bytes]]:
    """Split a batch that got a 422 into (rejected, worth resending).

    The server rejects a whole batch for one bad event and names the bad ones by JSON Pointer
    (``/3/name``). When every error names an event, the others can be sent again; otherwise
    the whole batch counts as rejected.
    """
    if error.status != 422 or not error.errors:
        return events, []
    bad: set[int] = set()
    for problem in error.errors:
        match = _EVENT_PATH.match(str(problem.get("path", "")))
        if match is None or int(match.group(1)) >= len(events):
            return events, []
        bad.add(int(match.group(1)))
    rejected = [e for i, e in enumerate(events) if i in bad]
    return rejected, [e for i, e in enumerate(events) if i not in bad]
