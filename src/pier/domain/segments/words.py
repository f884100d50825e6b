"""A parsed rule tree written out in words, for people (the portal's Lists tab):
"plan is pro, and did purchased at least 3 times in the last 30 days"."""

from __future__ import annotations

import re
import time

import msgspec

from .paths import Every, Path
from .rules import Condition, EventWrapper, Fixed, Frequency, Node, Rule, target
from .values import to_text

PHRASES = {  # (type, operator) → words; types not named use the "*" row
    ("*", "="): "is",
    ("*", "!="): "is not",
    ("*", "contains"): "contains",
    ("*", "not contain"): "does not contain",
    ("*", "starts with"): "starts with",
    ("*", "not start with"): "does not start with",
    ("*", "ends with"): "ends with",
    ("*", "is set"): "is set",
    ("*", "is not set"): "is not set",
    ("*", "empty"): "is empty",
    ("number", "<"): "is less than",
    ("number", "<="): "is at most",
    ("number", ">"): "is more than",
    ("number", ">="): "is at least",
    ("date", "<"): "is before",
    ("date", "<="): "is on or before",
    ("date", ">"): "is after",
    ("date", ">="): "is on or after",
    ("date", "is same day"): "is the same day as",
}
COUNTS = {"=": "exactly", "<": "fewer than", "<=": "at most", ">": "more than", ">=": "at least"}
_PLAIN_KEY = re.compile(r"\w+")


def rule_words(rule: Rule) -> str:
    """The whole tree in words; an empty top wrapper holds for everyone."""
    return _node(rule.root, top=True)


def _node(node: Node, top: bool = False) -> str:
    if isinstance(node, Condition):
        return _condition(node)
    if isinstance(node, EventWrapper):
        return _event(node)
    parts = [_node(child) for child in node.children]
    if not parts:
        return "everyone"
    text = _join(node.operator, parts)
    return text if top or len(parts) == 1 or node.operator in ("none", "xor") else f"({text})"


def _join(operator: str, parts: list[str]) -> str:
    if operator == "none":
        return "none of (" + "; ".join(parts) + ")"
    if operator == "xor":
        return "exactly one of (" + "; ".join(parts) + ")"
    return f", {operator} ".join(parts)


def path_words(path: Path) -> str:
    """A parsed path as written, without the leading `$.`: `plan`, `address.city`, `tags[*]`,
    `['favorite color']`."""
    out = ""
    for step in path:
        if isinstance(step, Every):
            out += "[*]"
        elif isinstance(step, int):
            out += f"[{step}]"
        elif _PLAIN_KEY.fullmatch(step):
            out += f".{step}" if out else step
        else:
            out += "['" + step.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return out or "$"


def _value(value: object) -> str:
    text = value if isinstance(value, str) else to_text(value)
    if text is None:
        return "null"
    if not text or text != text.strip() or ", " in text:
        return msgspec.json.encode(text).decode()  # quoted: "" or text a reader could misread
    return text


def _condition(cond: Condition) -> str:
    phrase = PHRASES.get((cond.type, cond.operator)) or PHRASES[("*", cond.operator)]
    subject = f"{path_words(cond.path)} {phrase}"
    if cond.operator in ("is set", "is not set", "empty"):
        return subject
    if cond.type == "boolean" and cond.template is None:
        truth = target(cond, 0)  # the value as §4.3 reads it ("" and null mean true)
        return f"{subject} {'true' if truth else 'false'}"
    return f"{subject} {_value(cond.value)}"


def _event(node: EventWrapper) -> str:
    text = f"did {node.name}"
    if node.frequency is not None:
        text += " " + _frequency(node.frequency)
    parts = [_node(child) for child in node.children]
    if parts:
        joined = _join(node.operator, parts)
        wrap = len(parts) > 1 and node.operator in ("and", "or")
        text += f" where ({joined})" if wrap else f" where {joined}"
    return text


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _frequency(f: Frequency) -> str:
    if (f.operator, f.count) in (("<", 1), ("<=", 0), ("=", 0)):
        count = "0 times"
    else:
        count = f"{COUNTS[f.operator]} {_times(f.count)}"
    period = f.period
    if isinstance(period, Fixed):
        start = _date(period.start)
        when = f"since {start}" if period.end is None else f"from {start} to {_date(period.end)}"
    elif period.value == 1:
        when = f"in the last {period.unit}"
    else:
        when = f"in the last {period.value} {period.unit}s"
    return f"{count} {when}"


def _date(ms: int) -> str:
    """A date (UTC) as `2024-05-01`, or `2024-05-31 23:59:59` when it has a time of day."""
    day = time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))
    if ms % 86_400_000 == 0:
        return day
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + " UTC"
