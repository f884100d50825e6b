"""Query, path and header parameters: one strict parser for each kind (an integer in a range, a
limit, a cursor, a timestamp). A bad value is a 422 naming the parameter, never a 500.

Numbers are ASCII digits only: Python's int() and str.isdigit() also take `²`, `٣` or `1_000`,
and int() of more than 4,300 digits raises; ids and times fit PostgreSQL's bigint."""

from __future__ import annotations

import base64
import binascii

from . import validation
from .errors import Problem, invalid
from .validation import MAX_INT  # bigint, SQLite's INTEGER: every id, time and cursor fits

_DIGITS = len(str(MAX_INT))


def integer(value: str | None, low: int = 0, high: int = MAX_INT) -> int | None:
    """The value when it is ASCII digits (no sign, space or `_`) in [low, high], else None."""
    if not value or len(value) > _DIGITS or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if low <= number <= high else None


def choice(value: str | None, name: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed`; the first when absent; a 422 naming the parameter for anything else."""
    if value is None:
        return allowed[0]
    if value not in allowed:
        raise invalid([Problem(f"/{name}", f"{name} must be {' or '.join(allowed)}")])
    return value


def limit(value: str | None, default: int, maximum: int = 1000) -> int:
    """A page size from 1 to `maximum`; `default` when absent."""
    if value is None:
        return default
    number = integer(value, 1, maximum)
    if number is None:
        raise invalid([Problem("/limit", f"limit must be a whole number from 1 to {maximum}")])
    return number


def cursor(value: str | None, size: int, name: str = "cursor") -> tuple[int, ...] | None:
    """The `size` numbers inside a cursor made by render.encode_cursor; None when absent or
    empty; a 422 naming the parameter for anything else."""
    if not value:
        return None
    parts: list[int | None] = []
    if len(value) <= 2 * size * _DIGITS:  # base64 of `size` numbers and their colons
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            parts = [integer(p) for p in raw.decode("ascii").split(":")]
        except (binascii.Error, UnicodeDecodeError, ValueError):
            parts = []
    if len(parts) != size or None in parts:
        raise invalid([Problem(f"/{name}", f"{name} is not a cursor this API returned")])
    return tuple(p for p in parts if p is not None)


def position(value: str | None, name: str = "cursor") -> tuple[int, int] | None:
    """The (created_at, id) cursor of a list newest first (see cursor)."""
    parts = cursor(value, 2, name)
    return (parts[0], parts[1]) if parts else None


def time_text(value: str, now: int) -> tuple[int | None, str | None]:
    """(epoch ms, None) for a time written as text (epoch milliseconds, or ISO-8601 with an
    offset), else (None, problem): the same rules as an event's timestamp
    (validation.event_time). A header's, a CSV cell's."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        number = integer(text)
        if number is None:
            return None, "epoch milliseconds out of range"
        return validation.event_time(number, now)
    return validation.event_time(text, now)


def timestamp(value: str, name: str, now: int) -> int:
    """A time sent in a header (time_text), in epoch ms; a 422 naming the header."""
    ms, problem = time_text(value, now)
    if problem or ms is None:
        raise invalid([Problem(f"/headers/{name}", f"{name}: {problem}")])
    return ms
