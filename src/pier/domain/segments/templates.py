"""Rule values as Handlebars templates (contract §6): the mustache expressions Parcelvoy's rules
use, rendered with an empty context and the date helpers, all in UTC unless a zone is given.

Supported: text, `{{expr}}`, `{{{expr}}}`, `{{&expr}}`, `{{! comment}}`, `~` whitespace control;
an expression is a helper or a path, then arguments (strings, numbers, true/false/null, paths,
`(subexpressions)`) and `key=value` pairs (ignored). Paths render as "" (the context is empty).
Block helpers and partials are refused. A template is parsed once (`parse_template`), rendered
for each `now` (`Template.render`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from .values import days_in_month, js_number_text, parse_date, parse_number


class TemplateError(ValueError):
    pass


class Literal(msgspec.Struct, frozen=True):
    value: Any  # str, float, bool or None


class Var(msgspec.Struct, frozen=True):
    name: str  # a path into the (empty) context: renders as undefined


class Call(msgspec.Struct, frozen=True):
    helper: str
    args: tuple[Literal | Var | Call, ...]


Expr = Literal | Var | Call


class Mustache(msgspec.Struct, frozen=True):
    expr: Expr
    escape: bool


class Template(msgspec.Struct, frozen=True):
    parts: tuple[str | Mustache, ...]

    @property
    def uses_now(self) -> bool:
        """Whether the rendering depends on the evaluation instant."""
        return any(isinstance(p, Mustache) and _uses_now(p.expr) for p in self.parts)

    def render(self, now: int) -> str:
        """The text for this `now` (ms). Raises TemplateError when a helper fails."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _eval(part.expr, now)
            text = _to_text(value)
            out.append(_escape(text) if part.escape else text)
        return "".join(out)


def _uses_now(expr: Expr) -> bool:
    if isinstance(expr, Literal):
        return bool(expr.value == "now")
    if isinstance(expr, Call):
        return expr.helper == "now" or any(_uses_now(a) for a in expr.args)
    return False


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    |(?P<number>-?[0-9]+(?:\.[0-9]+)?)(?=[\s)]|$)
    |(?P<open>\()|(?P<close>\))
    |(?P<hash>[A-Za-z_][\w-]*)=
    |(?P<id>(?:\.\./|@)?[^\s()="']+)
    )""",
    re.VERBOSE,
)
_MUSTACHE = re.compile(r"\{\{(~?)(\{?)(.*?)(\}?)(~?)\}\}", re.DOTALL)


def parse_template(text: str) -> Template:
    """Parse a rule value; raises TemplateError when it does not parse or names an unknown
    helper."""
    parts: list[str | Mustache] = []
    at = 0
    strip_next = False
    for m in _MUSTACHE.finditer(text):
        before = text[at : m.start()]
        if strip_next:
            before = before.lstrip()
        if m[1]:
            before = before.rstrip()
        if before:
            parts.append(before)
        at, strip_next = m.end(), bool(m[5])
        body = m[3]
        triple = bool(m[2])
        if triple != bool(m[4]):
            raise TemplateError(f"unbalanced braces in {m[0]!r}")
        if not triple and body.startswith("!"):
            continue  # a comment
        escape = not triple
        if not triple and body.startswith("&"):
            body, escape = body[1:], False
        if body[:1] in ("#", "/", "^", ">") or body.strip() == "else":
            raise TemplateError(f"{m[0]!r}: block helpers and partials are not supported")
        parts.append(Mustache(_parse_expr(body, m[0]), escape))
    rest = text[at:]
    if strip_next:
        rest = rest.lstrip()
    if "{{" in rest:
        raise TemplateError(f"unclosed mustache in {text!r}")
    if rest:
        parts.append(rest)
    return Template(tuple(parts))


def _tokens(body: str, where: str) -> list[tuple[str, str]]:
    out = []
    at = 0
    body = body.rstrip()
    while at < len(body):
        m = _TOKEN.match(body, at)
        if m is None or m.end() == at:
            raise TemplateError(f"cannot parse {where!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m[kind]))
        at = m.end()
    return out


def _parse_expr(body: str, where: str) -> Expr:
    tokens = _tokens(body, where)
    if not tokens:
        raise TemplateError(f"empty expression {where!r}")
    expr, end = _parse_call(tokens, 0, where, top=True)
    if end != len(tokens):
        raise TemplateError(f"unexpected ')' in {where!r}")
    return expr


def _parse_call(tokens: list[tuple[str, str]], i: int, where: str, top: bool) -> tuple[Expr, int]:
    kind, text = tokens[i]
    if kind != "id":
        if top and len(tokens) == 1:
            return _parse_arg(tokens, i, where)
        raise TemplateError(f"{where!r}: expected a helper name, found {text!r}")
    name = text
    i += 1
    args: list[Expr] = []
    while i < len(tokens) and tokens[i][0] != "close":
        if tokens[i][0] == "hash":
            if i + 1 >= len(tokens):
                raise TemplateError(f"{where!r}: {tokens[i][1]}= needs a value")
            _, i = _parse_arg(tokens, i + 1, where)  # hash arguments: accepted, unused
            continue
        arg, i = _parse_arg(tokens, i, where)
        args.append(arg)
    if name in HELPERS:
        return Call(name, tuple(args)), i
    if args:
        raise TemplateError(f"{where!r}: unknown helper {name!r}")
    return _literal_or_var(name), i


def _parse_arg(tokens: list[tuple[str, str]], i: int, where: str) -> tuple[Expr, int]:
    kind, text = tokens[i]
    if kind == "string":
        return Literal(re.sub(r"\\(.)", r"\1", text[1:-1])), i + 1
    if kind == "number":
        return Literal(float(text)), i + 1
    if kind == "open":
        if i + 1 >= len(tokens):
            raise TemplateError(f"{where!r}: unclosed '('")
        expr, j = _parse_call(tokens, i + 1, where, top=False)
        if j >= len(tokens) or tokens[j][0] != "close":
            raise TemplateError(f"{where!r}: unclosed '('")
        if not isinstance(expr, Call):
            raise TemplateError(f"{where!r}: unknown helper in subexpression")
        return expr, j + 1
    if kind == "id":
        if text in HELPERS:
            return Var(text), i + 1  # a helper name as an argument is just a name
        return _literal_or_var(text), i + 1
    raise TemplateError(f"{where!r}: unexpected {text!r}")


def _literal_or_var(name: str) -> Expr:
    words = {"true": True, "false": False, "null": None, "undefined": None}
    if name in words:
        return Literal(words[name])
    return Var(name)


def _eval(expr: Expr, now: int) -> Any:
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Var):
        return None
    args = [_eval(a, now) for a in expr.args]
    return HELPERS[expr.helper](now, *args)


def _to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return js_number_text(float(value))
    return str(value)


_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;", "`": "&#x60;"}
_ESCAPES["="] = "&#x3D;"


def _escape(text: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in text)


# -- the date helpers -------------------------------------------------------------------------

_UNITS = {
    "year": "years",
    "month": "months",
    "week": "weeks",
    "day": "days",
    "hour": "hours",
    "minute": "minutes",
    "second": "seconds",
}
_MS = {"weeks": 604_800_000, "days": 86_400_000, "hours": 3_600_000, "minutes": 60_000}
_MS["seconds"] = 1000
_DAYS = {"mo": 0, "tu": 1, "we": 2, "th": 3, "fr": 4, "sa": 5, "su": 6}
_FORMAT = re.compile(r"yyyy|MM|dd|HH|mm|ss|SSS")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(value: Any, now: int) -> int:
    if value == "now":
        return now
    if isinstance(value, str):
        ms = parse_date(value)
        if ms is not None:
            return ms
    elif isinstance(value, float) and not isinstance(value, bool) and abs(value) <= 8.64e15:
        return int(value)
    raise TemplateError(f"{_show(value)} is not a date")


def _unit(value: Any) -> str:
    if isinstance(value, str):
        unit = _UNITS.get(value, value)
        if unit in _UNITS.values():
            return unit
    raise TemplateError(f"{_show(value)} is not a unit (years, months, weeks, days, hours...)")


def _amount(value: Any) -> int:
    x = (
        value
        if isinstance(value, float)
        else parse_number(value)
        if isinstance(value, str)
        else None
    )
    if x is None:
        raise TemplateError(f"{_show(value)} is not a number")
    return int(x)


def _show(value: Any) -> str:
    return "undefined" if value is None else repr(value)


def _dt(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def _ms(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


def _iso(ms: int) -> str:
    """ISO 8601 UTC to whole seconds (milliseconds dropped)."""
    try:
        return _dt(ms - ms % 1000).strftime("%Y-%m-%dT%H:%M:%SZ")
    except OverflowError as exc:
        raise TemplateError("the date is out of range") from exc


def _add_months(ms: int, months: int) -> int:
    try:
        dt = _dt(ms)
        total = dt.year * 12 + dt.month - 1 + months
        year, month = divmod(total, 12)
        day = min(dt.day, days_in_month(year, month + 1))
        return _ms(dt.replace(year=year, month=month + 1, day=day))
    except (OverflowError, ValueError) as exc:
        raise TemplateError("the date is out of range") from exc


def add(ms: int, amount: int, unit: str) -> int:
    if unit == "years":
        return _add_months(ms, 12 * amount)
    if unit == "months":
        return _add_months(ms, amount)
    return ms + amount * _MS[unit]


def _format(ms: int, fmt: Any, zone: Any) -> str:
    if not isinstance(fmt, str):
        raise TemplateError(f"{_show(fmt)} is not a format")
    try:
        tz = UTC if zone is None else ZoneInfo(zone)
        dt = _dt(ms).astimezone(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OverflowError) as exc:
        raise TemplateError(f"{_show(zone)} is not a time zone") from exc
    fields = {
        "yyyy": f"{dt.year:04d}",
        "MM": f"{dt.month:02d}",
        "dd": f"{dt.day:02d}",
        "HH": f"{dt.hour:02d}",
        "mm": f"{dt.minute:02d}",
        "ss": f"{dt.second:02d}",
        "SSS": f"{dt.microsecond // 1000:03d}",
    }
    return _FORMAT.sub(lambda m: fields[m[0]], fmt)


def _now(now: int, fmt: Any = "yyyy-MM-dd HH:mm:ss", zone: Any = None, *_: Any) -> str:
    return _format(now, fmt, zone)


def _date_format(now: int, date: Any = None, fmt: Any = None, zone: Any = None, *_: Any) -> str:
    return _format(_instant(date, now), fmt, zone)


def _add_date(now: int, date: Any = None, amount: Any = None, unit: Any = None, *_: Any) -> str:
    return _iso(add(_instant(date, now), _amount(amount), _unit(unit)))


def _sub_date(now: int, date: Any = None, amount: Any = None, unit: Any = None, *_: Any) -> str:
    return _iso(add(_instant(date, now), -_amount(amount), _unit(unit)))


def _set_date(now: int, date: Any = None, unit: Any = None, value: Any = None, *_: Any) -> str:
    dt = _dt(_instant(date, now))
    unit, n = _unit(unit), _amount(value)
    limits = {"years": (1, 9999), "months": (1, 12), "days": (1, 31), "hours": (0, 23)}
    low, high = limits.get(unit, (0, 59))
    if unit == "weeks" or not low <= n <= high:
        raise TemplateError(f"setDate cannot set {unit} to {n}")
    if unit == "years":
        dt = dt.replace(year=n, day=min(dt.day, days_in_month(n, dt.month)))
    elif unit == "months":
        dt = dt.replace(month=n, day=min(dt.day, days_in_month(dt.year, n)))
    elif unit == "days":
        dt = dt.replace(day=min(n, days_in_month(dt.year, dt.month)))
    else:
        dt = (
            dt.replace(hour=n)
            if unit == "hours"
            else dt.replace(minute=n)
            if unit == "minutes"
            else dt.replace(second=n)
        )
    return _iso(_ms(dt))


def _next_date(now: int, date: Any = None, day: Any = None, *_: Any) -> str:
    ms = _instant(date, now)
    if day not in _DAYS:
        raise TemplateError(f"{_show(day)} is not a day (mo, tu, we, th, fr, sa, su)")
    ahead = (_DAYS[day] - _dt(ms).weekday() - 1) % 7 + 1
    return _iso(ms + ahead * 86_400_000)


def _months_between(a: int, b: int) -> int:
    """Whole calendar months from b to a, toward zero."""
    if a < b:
        return -_months_between(b, a)
    da, db = _dt(a), _dt(b)
    months = (da.year - db.year) * 12 + da.month - db.month
    if months and _add_months(b, months) > a:
        months -= 1
    return months


def _date_diff(now: int, date: Any = None, date2: Any = None, unit: Any = "days", *_: Any) -> float:
    a, b = _instant(date, now), _instant(date2, now)
    unit = _unit(unit)
    if unit in ("years", "months"):
        months = _months_between(a, b)
        return float(int(months / 12) if unit == "years" else months)
    whole = abs(a - b) // _MS[unit]
    return float(whole if a >= b else -whole)


HELPERS: dict[str, Callable[..., Any]] = {
    "now": _now,
    "dateFormat": _date_format,
    "addDate": _add_date,
    "subDate": _sub_date,
    "subtractDate": _sub_date,
    "setDate": _set_date,
    "nextDate": _next_date,
    "dateDiff": _date_diff,
}
