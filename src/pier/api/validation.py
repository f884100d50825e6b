"""Validation of request bodies (contract sections 2 and 4).

`problems_*` walk a decoded body and list every problem with its JSON Pointer path; they are the
one place where the rules and messages live. The hot endpoints first try a typed msgspec decode
(`schemas.py`), and fall back to these to say what is wrong.
"""

from __future__ import annotations

from typing import Any

from ..domain.feed import RESERVED_EVENT_NAMES
from ..domain.traits import TIMEZONE_ERROR, canonical_timezone
from .errors import Problem

ID_MAX = 255
MAX_EVENTS = 1000
LIMITS = {"email": 255, "phone": 64, "timezone": 50, "locale": 50}
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
    max_len: int = ID_MAX,
    required: bool = False,
    nullable: bool = True,
    nonempty: bool = False,
) -> None:
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
    if not isinstance(value, str):
        out.append(Problem(path, f"{key} must be a string"))
    elif len(value) > max_len:
        out.append(Problem(path, f"{key} must be at most {max_len} characters"))
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
    for key, limit in LIMITS.items():
        check_string(obj, key, base, out, max_len=limit)
    tz = obj.get("timezone")
    if isinstance(tz, str) and len(tz) <= LIMITS["timezone"] and canonical_timezone(tz) is None:
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
