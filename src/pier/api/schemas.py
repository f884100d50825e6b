"""Typed wire shapes for the fast path of the hot endpoints (identify, events), and their
conversion into domain commands. Anything these reject is re-checked by `validation` to say why."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from ..domain.commands import EventIn, Identify, Traits
from ..domain.feed import RESERVED_EVENT_NAMES
from ..domain.traits import canonical_timezone
from .fields import ID, MAX_EVENTS, PROFILE
from .validation import event_time

# the limits as declared in fields.py
Id = Annotated[str, ID.meta()]
Name = Annotated[str, ID.meta(nonempty=True)]
Email = Annotated[str, PROFILE["email"].meta()]
Phone = Annotated[str, PROFILE["phone"].meta()]
Timezone = Annotated[str, PROFILE["timezone"].meta()]
Locale = Annotated[str, PROFILE["locale"].meta()]
Data = dict[str, Any]


class Rejected(Exception):
    """The fast path cannot take this body: run the full validation for the problems."""


class WireTraits(msgspec.Struct, kw_only=True):
    anonymous_id: Id | None = None
    external_id: Id | None = None
    email: Email | None | UnsetType = UNSET
    phone: Phone | None | UnsetType = UNSET
    timezone: Timezone | None | UnsetType = UNSET
    locale: Locale | None | UnsetType = UNSET
    data: Data | None | UnsetType = UNSET


class WireIdentify(WireTraits, forbid_unknown_fields=True):
    pass


NULL = msgspec.Raw(b"null")
OPEN_BRACE = ord("{")


class WireEvent(msgspec.Struct, kw_only=True):
    name: Name
    anonymous_id: Id | None = None
    external_id: Id | None = None
    # kept as sent (msgspec has checked it is JSON): decoding and encoding it again was a
    # tenth of the cost of a request; _data checks that it is an object (or null)
    data: msgspec.Raw = NULL
    properties: Data | None = None
    user: WireTraits | None = None
    message_id: Id | None = None
    timestamp: int | str | None = None


_identify = msgspec.json.Decoder(WireIdentify)
_events = msgspec.json.Decoder(
    Annotated[list[WireEvent], Meta(min_length=1, max_length=MAX_EVENTS)]
)


def _traits(w: WireTraits) -> Traits:
    tz = w.timezone
    if isinstance(tz, str):
        tz = canonical_timezone(tz)
        if tz is None:
            raise Rejected
    data = w.data if w.data is not None else UNSET  # data: null leaves data as it is
    return Traits(email=w.email, phone=w.phone, timezone=tz, locale=w.locale, data=data)


def identify(body: bytes, project_id: int) -> Identify:
    try:
        w = _identify.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:  # ingest: 400
        raise Rejected from exc
    if not (w.anonymous_id or w.external_id):
        raise Rejected
    return Identify(
        project_id=project_id,
        anonymous_id=w.anonymous_id or None,
        external_id=w.external_id or None,
        traits=_traits(w),
    )


def events(body: bytes, now_ms: int, skew_ms: int) -> list[EventIn]:
    try:
        if not body.isascii():  # msgspec does not check the UTF-8 of what it keeps Raw
            body.decode()
        wire = _events.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise Rejected from exc  # too deep, or not UTF-8: ingest says 400
    result = []
    for w in wire:
        if w.name in RESERVED_EVENT_NAMES:
            raise Rejected
        if w.user is None and w.properties is None and w.timestamp is None and w.external_id:
            # the common shape, built without the general path's calls
            result.append(
                EventIn(
                    w.anonymous_id or None,
                    w.external_id,
                    w.name,
                    _data(w.data),
                    None,
                    w.message_id or None,
                )
            )
        else:
            result.append(_event(w, now_ms, skew_ms))
    return result


def _data(raw: msgspec.Raw) -> msgspec.Raw | dict[str, Any]:
    """An event's data: the object as sent, {} for null; anything else is rejected."""
    if memoryview(raw)[0] == OPEN_BRACE:
        return raw
    if raw == NULL:
        return {}
    raise Rejected


def _event(w: WireEvent, now_ms: int, skew_ms: int) -> EventIn:
    anon = w.anonymous_id or None
    ext = w.external_id or None
    traits = None
    if w.user is not None:  # the event's ids win; the user object's fill in absent ones
        anon = anon or w.user.anonymous_id or None
        ext = ext or w.user.external_id or None
        traits = _traits(w.user)
    if anon is None and ext is None:
        raise Rejected
    data = _data(w.data)
    if w.properties:  # the Android SDK's name for data; data wins on conflicts
        own = data if isinstance(data, dict) else msgspec.json.decode(data)
        data = {**w.properties, **own}
    ts = None
    if w.timestamp is not None:
        ts, problem = event_time(w.timestamp, now_ms, skew_ms)
        if problem:
            raise Rejected
    return EventIn(
        anonymous_id=anon,
        external_id=ext,
        name=w.name,
        data=data,
        traits=traits,
        message_id=w.message_id or None,
        timestamp=ts,
    )
