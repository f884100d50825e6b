"""Validation of request bodies (contract sections 2 and 4).

`problems_*` walk a decoded body and list every problem with its JSON Pointer path. A field's
limit comes from its declaration (`fields.py`), as do the fast path's types and the OpenAPI
schemas. The hot endpoints first try a typed msgspec decode (`schemas.py`), and fall back to
these to say what is wrong.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..domain.feed import RESERVED_EVENT_NAMES
from ..domain.traits import TIMEZONE_ERROR, canonical_timezone
from .errors import Problem
from .fields import MAX_EVENTS, PROFILE, field

IDENTIFY_FIELDS = ("anonymous_id", "external_id", "email", "phone", "timezone", "locale", "data")
DEVICE_REQUIRED = ("device_id", "os", "model", "app_build", "app_version")
NO_ID = "anonymous_id or external_id is required (a non-empty string)"


def pointer(base: str, key: str | int) -> str:
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{base}/{token}"


def check_string(
    obj: dict[str, Any],
    key: str,
    base: str,
    out: list[Problem],
    *,
    required: bool = False,
    nullable: bool = True,
    nonempty: bool = False,
) -> None:
    """The field `key` of `obj` against its declaration (fields.py) and the body's rules."""
    path = pointer(base, key)
    if key not in obj:
        if required:
            out.append(Problem(path, f"{key} is required"))
        return
    value = obj[key]
    if value is None:
        if not nullable:
            out.append(Problem(path, f"{key} must be a string, not null"))
        return
    declared = field(key)
    if not isinstance(value, str):
        out.append(Problem(path, f"{key} must be a string"))
    elif not declared.fits(value):
        out.append(Problem(path, declared.too_long(key)))
    elif nonempty and not value:
        out.append(Problem(path, f"{key} must not be empty"))


def reserved_name(name: str) -> str | None:
    """The problem with an event name that Pier's own feed items (or lists) take, if it is one."""
    if name in RESERVED_EVENT_NAMES:
        return f"{name!r} is reserved for Pier's own feed items: choose another event name"
    return None


def check_event_name(obj: dict[str, Any], key: str, base: str, out: list[Problem]) -> None:
    """An event's name (`name`, or `event` on /track and Segment's track): a non-empty string
    that is not reserved."""
    before = len(out)
    check_string(obj, key, base, out, required=True, nullable=False, nonempty=True)
    value = obj.get(key)
    if len(out) == before and isinstance(value, str) and (problem := reserved_name(value)):
        out.append(Problem(pointer(base, key), problem))


def check_object(obj: dict[str, Any], key: str, base: str, out: list[Problem]) -> None:
    value = obj.get(key)
    if value is not None and not isinstance(value, dict):
        out.append(Problem(pointer(base, key), f"{key} must be an object"))


def has_id(obj: dict[str, Any]) -> bool:
    return any(isinstance(obj.get(k), str) and obj[k] for k in ("anonymous_id", "external_id"))


def check_traits(obj: dict[str, Any], base: str, out: list[Problem]) -> None:
    """identify's fields: ids, profile fields, data."""
    for key in ("anonymous_id", "external_id"):
        check_string(obj, key, base, out)
    for key in PROFILE:
        check_string(obj, key, base, out)
    tz = obj.get("timezone")
    if PROFILE["timezone"].fits(tz) and canonical_timezone(tz) is None:
        out.append(Problem(pointer(base, "timezone"), TIMEZONE_ERROR))
    check_object(obj, "data", base, out)


def _not_object(base: str, what: str) -> list[Problem]:
    return [Problem(base, f"{what} must be a JSON object")]


def problems_identify(body: Any) -> list[Problem]:
    if not isinstance(body, dict):
        return _not_object("", "the body")
    out: list[Problem] = []
    for key in body:
        if key not in IDENTIFY_FIELDS:
            out.append(Problem(pointer("", key), f"unknown field {key!r}"))
    check_traits(body, "", out)
    if not has_id(body):
        out.append(Problem("", NO_ID))
    return out


def problems_alias(body: Any) -> list[Problem]:
    if not isinstance(body, dict):
        return _not_object("", "the body")
    out: list[Problem] = []
    for key in ("anonymous_id", "external_id"):
        check_string(body, key, "", out, required=True, nullable=False, nonempty=True)
    return out


def problems_device(body: Any) -> list[Problem]:
    if not isinstance(body, dict):
        return _not_object("", "the body")
    out: list[Problem] = []
    for key in ("anonymous_id", "external_id", "token", "os_version"):
        check_string(body, key, "", out)
    for key in DEVICE_REQUIRED:
        check_string(body, key, "", out, required=True, nullable=False, nonempty=key == "device_id")
    if not has_id(body):
        out.append(Problem("", NO_ID))
    return out


def problems_events(body: Any, now_ms: int, skew_ms: int = 0) -> list[Problem]:
    if not isinstance(body, list):
        return [Problem("", "the body must be a JSON array of events")]
    if not body:
        return [Problem("", "at least one event is required")]
    if len(body) > MAX_EVENTS:
        return [Problem("", f"at most {MAX_EVENTS} events are accepted in one request")]
    out: list[Problem] = []
    for i, event in enumerate(body):
        base = pointer("", i)
        if not isinstance(event, dict):
            out.extend(_not_object(base, "an event"))
            continue
        check_event_name(event, "name", base, out)
        for key in ("anonymous_id", "external_id", "message_id"):
            check_string(event, key, base, out)
        check_object(event, "data", base, out)
        check_object(event, "properties", base, out)
        user = event.get("user")
        if user is not None and not isinstance(user, dict):
            out.append(Problem(pointer(base, "user"), "user must be an object"))
            user = None
        if user is not None:
            check_traits(user, pointer(base, "user"), out)
        if not has_id(event) and not (user and has_id(user)):
            out.append(Problem(base, NO_ID))
        if "timestamp" in event and event["timestamp"] is not None:
            _, problem = event_time(event["timestamp"], now_ms, skew_ms)
            if problem:
                out.append(Problem(pointer(base, "timestamp"), problem))
    return out


# -- event time ------------------------------------------------------------------------
DAY_MS = 86_400_000
MIN_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z


def event_time(value: Any, now_ms: int, skew_ms: int = 0) -> tuple[int | None, str | None]:
    """(epoch ms, None) for a valid timestamp, corrected by the client's clock skew, else
    (None, problem). Accepts ISO-8601 with an offset, or epoch milliseconds."""
    from datetime import datetime

    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None, "timestamp must be an ISO-8601 string with an offset, or epoch milliseconds"
    if isinstance(value, int):
        ms = value
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None, f"timestamp {value!r} is not an ISO-8601 date-time"
        if parsed.tzinfo is None:
            return None, "timestamp must include a UTC offset (for example Z or +02:00)"
        ms = int(parsed.timestamp() * 1000)
    ms += skew_ms
    if ms > now_ms + DAY_MS:
        return None, "timestamp is more than 1 day in the future"
    if ms < MIN_TIME_MS:
        return None, "timestamp is before the year 2000"
    return ms, None


# -- what a body may hold: every JSON value a client sends may end up in stored data ------------
MAX_DEPTH = 32  # objects and arrays, the body's own counting as 1: event data is level 3
MAX_INT = 2**63 - 1  # a signed 64-bit integer: what every JSON parser reads (doubles lose digits)
DEPTH_ERROR = f"JSON may be nested at most {MAX_DEPTH} levels deep (objects and arrays)"
NUMBER_ERROR = (
    "a number must be an integer from -(2^63-1) to 2^63-1, or a finite decimal of a double's range"
)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b'"{}[]')))
_AS_PARENTHESES = bytes.maketrans(b"{[}]", b"(())")
_STRING = re.compile(rb'"[^"]*"')
_NUMBER_SHAPES = bytes.maketrans(b"123456789E", b"000000000e")


def nested_deeper(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether a JSON text nests objects and arrays deeper than `limit`, found in C without
    parsing it (about the cost of decoding it once): the strings taken out (escaped quotes
    first), the brackets left peeled, innermost pairs first, a level a pass. For valid JSON.
    A body with at most `limit` opening brackets is not even looked at: each level opens
    with one of its own (those in strings only add to the count)."""
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = raw.translate(_AS_PARENTHESES, _NOT_BRACKETS)
    brackets = brackets.replace(b'""', b"")  # empty strings, or two strings side by side
    if b'"' in brackets:  # strings holding brackets
        brackets = _STRING.sub(b"", brackets)
    for _ in range(limit):
        if not brackets:
            return False
        peeled = brackets.replace(b"()", b"")
        if len(peeled) == len(brackets):
            return False  # not JSON: its decoder says why
        brackets = peeled
    return bool(brackets)


def _may_hold_bad_number(raw: bytes) -> bool:
    """False when no number can be out of range: one needs 19 digits in a row, or an exponent
    of 3 digits (strings can match too: then body_problem looks closer)."""
    shapes = raw.translate(_NUMBER_SHAPES, b"+-")  # digits as 0, E as e, no signs
    return b"0" * 19 in shapes or b"0e000" in shapes


class _Object(list[tuple[str, Any]]):
    """An object's (key, value) pairs, duplicate keys kept (a stored text keeps them)."""


_BAD = object()  # a number out of range


def _int(text: str) -> object:
    return _BAD if len(text) > 20 or abs(int(text)) > MAX_INT else None


def _float(text: str) -> object:
    return None if math.isfinite(float(text)) else _BAD


def _constant(text: str) -> object:
    raise ValueError(text)  # NaN, Infinity: not JSON


def body_problem(raw: bytes) -> Problem | None:
    """The first place where a JSON body nests deeper than MAX_DEPTH or holds a number out of
    range, as a JSON Pointer; None when it has none (or is not JSON: its decoder says so)."""
    if not nested_deeper(raw) and not _may_hold_bad_number(raw):
        return None  # the usual body, checked at the cost of a few scans in C
    try:
        value = json.loads(
            raw.decode(),
            object_pairs_hook=_Object,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
    except RecursionError:  # deeper than the stack: far past the limit
        return Problem("", DEPTH_ERROR)
    except ValueError:
        return None
    return _first_problem(value, "", 1)


def _first_problem(value: Any, path: str, depth: int) -> Problem | None:
    if value is _BAD:
        return Problem(path, NUMBER_ERROR)
    if not isinstance(value, list):
        return None
    if depth > MAX_DEPTH:
        return Problem(path, DEPTH_ERROR)
    items = value if isinstance(value, _Object) else enumerate(value)
    for key, item in items:
        found = _first_problem(item, pointer(path, key), depth + 1)
        if found is not None:
            return found
    return None
