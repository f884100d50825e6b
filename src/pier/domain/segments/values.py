"""How a found JSON value (or a rule value) becomes text, a number, a truth or an instant
(contract §4). The SQL backends call these same functions on SQLite and mirror them on
PostgreSQL (store/migrations/postgres/0005_segment_functions.sql), so there is one definition of
each coercion."""

from __future__ import annotations

import math
import re
from typing import Any

DAY_MS = 86_400_000
MAX_DATE_MS = 8_640_000_000_000_000  # JavaScript's range of dates, either side of 1970
WHITESPACE = " \t\n\r\x0b\x0c"  # trimmed around numeric text

_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?"
)


class DateTime(int):
    """A `created_at` column: an instant (milliseconds) that only date rules can read."""


def js_number_text(x: float) -> str:
    """A number as JavaScript's String(x) writes it: 30.0 -> "30", 1e21 -> "1e+21"."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(float(x))).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + int(exp or 0)  # value = 0.digits x 10^point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, n = len(digits), point
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        text = (
            digits[0] + ("." + digits[1:] if k > 1 else "") + f"e{'+' if e >= 0 else '-'}{abs(e)}"
        )
    return sign + text


def parse_number(text: str) -> float | None:
    """Decimal text (after trimming) as a double; None when it is not a decimal literal or
    lies outside the range of doubles (it would be Infinity, or a non-zero value read as 0)."""
    text = text.strip(WHITESPACE)
    m = _DECIMAL.fullmatch(text)
    if m is None:
        return None
    x = float(text)
    if x in (float("inf"), float("-inf")):
        return None
    if x == 0 and m.group(1).strip("0.") != "":
        return None  # underflow: PostgreSQL refuses such text too
    return x


def to_text(value: Any) -> str | None:
    """§4.1: the text of a found value, or None (no value)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and not isinstance(value, DateTime):
        x = _float(value)
        return None if x is None else js_number_text(x)
    return None


def to_number(value: Any) -> float | None:
    """§4.2: the number of a found value, or None."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, DateTime):
        return None
    if isinstance(value, int | float):
        return _float(value)
    if isinstance(value, str):
        return parse_number(value)
    return None


def _float(value: int | float) -> float | None:
    """A JSON number as a double; None outside the range of doubles."""
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def is_true(value: Any) -> bool:
    """§4.3: true, "true" or the number 1."""
    if isinstance(value, bool):
        return value
    if isinstance(value, DateTime):
        return False
    if isinstance(value, int | float):
        return value == 1
    return bool(value == "true")


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def parse_date(text: str) -> int | None:
    """§4.4: ISO 8601 text as milliseconds since 1970 (no zone = UTC), or None."""
    m = _ISO.fullmatch(text)
    if m is None:
        return None
    y, mo, d = int(m[1]), int(m[2]), int(m[3])
    h, mi, s = int(m[4] or 0), int(m[5] or 0), int(m[6] or 0)
    if not (1 <= mo <= 12 and 1 <= d <= days_in_month(y, mo) and h < 24 and mi < 60 and s < 60):
        return None
    ms = int((m[7] or "")[:3].ljust(3, "0"))
    offset = 0
    if m[8] and m[8] != "Z":
        oh, om = int(m[8][1:3]), int(m[8][4:6])
        if oh >= 24 or om >= 60:
            return None
        offset = (oh * 60 + om) * 60_000 * (1 if m[8][0] == "+" else -1)
    return ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms - offset


def to_date(value: Any) -> int | None:
    """§4.4: the instant (ms) of a found value, or None. Numbers are milliseconds."""
    if isinstance(value, DateTime):
        return int(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not abs(value) <= MAX_DATE_MS:
            return None
        return int(value)  # toward zero, as JavaScript's Date does
    if isinstance(value, str):
        return parse_date(value)
    return None
