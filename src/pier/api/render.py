"""JSON shapes of the read API: users, devices, events, cursors, timestamps."""

from __future__ import annotations

import base64
import functools
import time
from typing import Any

import msgspec

from ..domain.model import Device, User
from ..store.base import EventRow
from .errors import HTTPProblem


@functools.lru_cache(maxsize=8192)
def iso(ms: int | None) -> str | None:
    """ISO-8601 UTC with milliseconds: 2026-11-26T08:39:35.123Z. Cached: a feed page or a batch
    of a destination holds many items of the same millisecond (committed together)."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    return f"{_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    """Feeds and exports format many times of the same few seconds: each is formatted once."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def device(d: Device) -> dict[str, Any]:
    return {
        "device_id": d.device_id,
        "token": d.token,
        "os": d.os,
        "os_version": d.os_version,
        "model": d.model,
        "app_build": d.app_build,
        "app_version": d.app_version,
        "extra": d.extra,
        "created_at": iso(d.created_at),
        "updated_at": iso(d.updated_at),
    }


def user(u: User) -> dict[str, Any]:
    anon = u.anonymous_ids or []
    return {
        "id": u.id,
        "anonymous_id": anon[0] if anon else None,
        "anonymous_ids": anon,
        "external_id": u.external_id,
        "email": u.email,
        "phone": u.phone,
        "timezone": u.timezone,
        "locale": u.locale,
        "data": u.data,
        "devices": [device(d) for d in u.devices or []],
        "created_at": iso(u.created_at),
        "updated_at": iso(u.updated_at),
    }


class Event(msgspec.Struct):
    """An event as the read API gives it (a struct encodes faster than a dict, in this order)."""

    id: int
    name: str
    data: msgspec.Raw
    created_at: str | None
    received_at: str | None
    message_id: str | None


def event(e: EventRow) -> Event:
    return Event(e.id, e.name, e.data, iso(e.created_at), iso(e.received_at), e.message_id)


def encode_cursor(*parts: int) -> str:
    """A page's cursor (read back by params.cursor)."""
    return base64.urlsafe_b64encode(":".join(map(str, parts)).encode()).decode().rstrip("=")


def not_found(what: str) -> HTTPProblem:
    return HTTPProblem(404, what)
