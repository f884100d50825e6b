"""Rule trees (contract §1, §7): parsed once into frozen typed nodes, or refused with every
problem and the JSON Pointer of where it is."""

from __future__ import annotations

from typing import Any

import msgspec

from .paths import Path, PathError, parse_path
from .templates import Template, TemplateError, parse_template
from .values import parse_date, to_date, to_number, to_text

MAX_DEPTH = 20
MAX_NODES = 500

OPERATORS = {
    "string": (
        "=",
        "!=",
        "contains",
        "not contain",
        "starts with",
        "not start with",
        "ends with",
        "is set",
        "is not set",
        "empty",
    ),
    "number": ("=", "!=", "<", "<=", ">", ">=", "is set", "is not set"),
    "boolean": ("=", "!="),
    "date": ("=", "!=", "<", "<=", ">", ">=", "is same day", "is set", "is not set"),
    "array": ("is set", "is not set", "empty", "contains"),
}
WITHOUT_VALUE = ("is set", "is not set", "empty")  # operators that ignore `value`
NEGATIONS = {"!=": "=", "not contain": "contains", "not start with": "starts with"}
WRAPPER_OPERATORS = ("and", "or", "none", "xor")
COUNT_OPERATORS = ("=", "<", "<=", ">", ">=")
GROUPS = ("parent", "user", "event")
UNIT_MS = {
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 7 * 86_400_000,
    "month": 30 * 86_400_000,
    "year": 365 * 86_400_000,
}
NODE_KEYS = frozenset(
    ("uuid", "root_uuid", "parent_uuid", "id", "type", "group", "path", "operator", "value")
    + ("children", "frequency")
)


class Rolling(msgspec.Struct, frozen=True):
    unit: str
    value: int

    @property
    def length(self) -> int:
        """The window in milliseconds (months are 30 days, years 365)."""
        return self.value * UNIT_MS[self.unit]


class Fixed(msgspec.Struct, frozen=True):
    start: int  # ms, inclusive
    end: int | None  # ms, inclusive


class Frequency(msgspec.Struct, frozen=True):
    period: Rolling | Fixed
    operator: str
    count: int


class Condition(msgspec.Struct, frozen=True):
    """A comparison on the found values of `path` (in the user, or the event inside an event
    wrapper). `value` is as received; `template` is set when it is a string holding `{`."""

    pointer: str
    uuid: str
    type: str
    path: Path
    operator: str
    value: str | int | float | bool | None
    template: Template | None


class Wrapper(msgspec.Struct, frozen=True):
    pointer: str
    uuid: str
    operator: str
    children: tuple[Node, ...]


class EventWrapper(msgspec.Struct, frozen=True):
    """True when the number of the user's qualifying events named `name` satisfies
    `frequency` (no frequency: at least one, ever)."""

    pointer: str
    uuid: str
    name: str
    operator: str
    children: tuple[Node, ...]
    frequency: Frequency | None


Node = Condition | Wrapper | EventWrapper


class RuleInvalid(ValueError):
    """The tree breaks the format; `problems` lists (JSON Pointer, message) for each problem."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(problems[0][1])
        self.problems = problems


class RuleError(ValueError):
    """A stored tree that cannot be evaluated (at this `now`): names the node."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(f"{pointer or '/'}: {message}")
        self.pointer = pointer
        self.message = message


def pointer(base: str, key: str | int) -> str:
    return f"{base}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def target(cond: Condition, now: int) -> Any:
    """The rule value of a condition at `now`, rendered and coerced to its type: text (string,
    array), a double (number), milliseconds (date) or a truth (boolean). Raises RuleError."""
    value: Any = cond.value
    if cond.template is not None:
        try:
            value = cond.template.render(now)
        except TemplateError as exc:
            raise RuleError(pointer(cond.pointer, "value"), str(exc)) from None
    if cond.type in ("string", "array"):
        text = "" if value is None else to_text(value)
        if text is None:
            raise RuleError(pointer(cond.pointer, "value"), "the value is out of range")
        return text
    if cond.type == "boolean":
        truth = _truth(value)
        if truth is None:
            raise RuleError(
                pointer(cond.pointer, "value"),
                'a boolean rule takes true, false, "true", "false", 1, 0, "" or null',
            )
        return truth
    coerced = to_number(value) if cond.type == "number" else _date_value(value)
    if coerced is None:
        shown = "" if value is None else f" {value!r}"
        what = "a number" if cond.type == "number" else "a date (ISO 8601 or milliseconds)"
        raise RuleError(pointer(cond.pointer, "value"), f"the value{shown} is not {what}")
    return coerced


def _truth(value: Any) -> bool | None:
    """§4.3: what a boolean rule's value asks for; None when it is none of the listed."""
    if value is None or value is True or value in ("true", ""):
        return True
    if value is False or value == "false":
        return False
    if isinstance(value, int | float) and value in (0, 1):
        return value == 1
    return None


def _date_value(value: Any) -> int | None:
    return None if isinstance(value, bool) else to_date(value)


def uses_value(cond: Condition) -> bool:
    return cond.operator not in WITHOUT_VALUE


class _Parser:
    def __init__(self, now: int) -> None:
        self.now = now
        self.problems: list[tuple[str, str]] = []
        self.uuids: set[str] = set()
        self.count = 0

    def fail(self, where: str, message: str) -> None:
        self.problems.append((where, message))

    def string(self, node: dict[str, Any], key: str, where: str, required: bool) -> str | None:
        if key not in node:
            if required:
                self.fail(pointer(where, key), f"{key} is required")
            return None
        value = node[key]
        if isinstance(value, str):
            return value
        if value is None and not required:
            return None
        self.fail(pointer(where, key), f"{key} must be a string, not {_json_type(value)}")
        return None

    def node(self, raw: Any, where: str, depth: int, in_event: bool) -> Node | None:
        self.count += 1
        if self.count > MAX_NODES:
            return None  # reported once, by parse_rule; the rest is not looked at
        if depth > MAX_DEPTH:
            self.fail(where, f"the tree is more than {MAX_DEPTH} levels deep")
            return None
        if not isinstance(raw, dict):
            self.fail(where, f"a rule node must be an object, not {_json_type(raw)}")
            return None
        for key in raw:
            if key not in NODE_KEYS:
                self.fail(pointer(where, key), f"unknown field {key!r}")
        uuid = self.string(raw, "uuid", where, True)
        if uuid is not None:
            if uuid in self.uuids:
                self.fail(pointer(where, "uuid"), f"uuid {uuid!r} is used twice in the tree")
            self.uuids.add(uuid)
        self.string(raw, "root_uuid", where, False)
        self.string(raw, "parent_uuid", where, False)
        if raw.get("id") is not None and (
            isinstance(raw["id"], bool) or not isinstance(raw["id"], int | float)
        ):
            self.fail(pointer(where, "id"), f"id must be a number, not {_json_type(raw['id'])}")
        kind = self.string(raw, "type", where, True)
        group = self.string(raw, "group", where, True)
        path = self.string(raw, "path", where, True)
        operator = self.string(raw, "operator", where, True)
        value = raw.get("value")
        if isinstance(value, list | dict):
            self.fail(pointer(where, "value"), f"value must not be {_json_type(value)}")
            value = None
        if group is not None and group not in GROUPS:
            self.fail(pointer(where, "group"), f"unknown group {group!r} (parent, user, event)")
        if kind == "wrapper":
            return self.wrapper(raw, where, depth, in_event, group, path, operator, value, uuid)
        if kind is not None and kind not in OPERATORS:
            self.fail(
                pointer(where, "type"),
                f"unknown type {kind!r} (wrapper, string, number, boolean, date, array)",
            )
        if kind not in OPERATORS:
            return None
        if raw.get("children") not in (None, []):  # null or [] carry nothing: accepted
            self.fail(pointer(where, "children"), f"a {kind} condition cannot have children")
        if raw.get("frequency") is not None:
            self.fail(pointer(where, "frequency"), f"a {kind} condition cannot have frequency")
        if operator is None or path is None or uuid is None:
            return None
        return self.condition(where, uuid, kind, path, operator, value)

    def condition(
        self, where: str, uuid: str, kind: str, text: str, operator: str, value: Any
    ) -> Condition | None:
        ok = True
        try:
            path = parse_path(text)
        except PathError as exc:
            self.fail(pointer(where, "path"), str(exc))
            ok, path = False, ()
        if operator not in OPERATORS[kind]:
            ok = False
            if kind == "array" and operator in ("=", "!="):
                message = "array rules cannot use = or != (use contains)"
            elif kind == "string" and operator in ("any", "none"):
                message = "value lists (any, none) are not supported: use an or of = rules"
            else:
                message = f"unknown operator {operator!r} for a {kind} rule ({', '.join(OPERATORS[kind])})"
            self.fail(pointer(where, "operator"), message)
        template = None
        if isinstance(value, str) and "{" in value:
            try:
                template = parse_template(value)
            except TemplateError as exc:
                self.fail(pointer(where, "value"), f"the template does not parse: {exc}")
                ok = False
        if not ok:
            return None
        cond = Condition(where, uuid, kind, path, operator, value, template)
        if uses_value(cond):
            try:
                target(cond, self.now)
            except RuleError as exc:
                self.fail(exc.pointer, exc.message)
                return None
        return cond

    def children(self, raw: dict[str, Any], where: str, depth: int, in_event: bool) -> list[Node]:
        children = raw.get("children")
        if children is None:
            return []
        if not isinstance(children, list):
            self.fail(pointer(where, "children"), "children must be an array of rule nodes")
            return []
        base = pointer(where, "children")
        parsed = [
            self.node(c, pointer(base, i), depth + 1, in_event) for i, c in enumerate(children)
        ]
        return [n for n in parsed if n is not None]

    def wrapper(
        self,
        raw: dict[str, Any],
        where: str,
        depth: int,
        in_event: bool,
        group: str | None,
        path: str | None,
        operator: str | None,
        value: Any,
        uuid: str | None,
    ) -> Node | None:
        if group != "event":
            if raw.get("frequency") is not None:
                self.fail(pointer(where, "frequency"), "only event wrappers have a frequency")
            if operator is not None and operator not in WRAPPER_OPERATORS:
                self.fail(
                    pointer(where, "operator"),
                    f"unknown operator {operator!r} for a wrapper (and, or, none, xor)",
                )
            children = self.children(raw, where, depth, in_event)
            if uuid is None or operator not in WRAPPER_OPERATORS:
                return None
            return Wrapper(where, uuid, operator, tuple(children))
        ok = True
        if in_event:
            self.fail(where, "an event wrapper cannot sit inside another event wrapper")
            ok = False
        if path is not None and path not in ("$.name", "name"):
            self.fail(pointer(where, "path"), 'an event wrapper\'s path is "$.name"')
            ok = False
        if not isinstance(value, str) or not value:
            self.fail(
                pointer(where, "value"),
                "an event wrapper's value is the event name (a non-empty string)",
            )
            ok = False
        frequency = self.frequency(raw.get("frequency"), pointer(where, "frequency"))
        children = self.children(raw, where, depth, True)
        has_children = bool(raw.get("children"))
        if has_children and operator is not None and operator not in WRAPPER_OPERATORS:
            self.fail(
                pointer(where, "operator"),
                f"unknown operator {operator!r} for an event wrapper (and, or, none, xor)",
            )
            ok = False
        if not ok or uuid is None or operator is None or frequency is False:
            return None
        assert isinstance(value, str) and not isinstance(frequency, bool)
        return EventWrapper(where, uuid, value, operator, tuple(children), frequency)

    def frequency(self, raw: Any, where: str) -> Frequency | None | bool:
        """The parsed frequency, None when absent, False when refused."""
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.fail(where, f"frequency must be an object, not {_json_type(raw)}")
            return False
        before = len(self.problems)
        for key in raw:
            if key not in ("period", "operator", "count"):
                self.fail(pointer(where, key), f"unknown field {key!r}")
        operator: Any = raw.get("operator")  # checked below before it is used
        count: Any = raw.get("count")
        if "operator" not in raw:
            self.fail(pointer(where, "operator"), "operator is required")
        elif operator not in COUNT_OPERATORS:
            self.fail(
                pointer(where, "operator"), f"unknown count operator {operator!r} (=, <, <=, >, >=)"
            )
        if "count" not in raw:
            self.fail(pointer(where, "count"), "count is required")
        elif isinstance(count, bool) or not isinstance(count, int) or count < 0:
            self.fail(pointer(where, "count"), "count must be an integer, 0 or more")
        period = self.period(raw.get("period"), pointer(where, "period"), "period" in raw)
        if len(self.problems) > before or period is None:
            return False
        return Frequency(period, operator, count)

    def period(self, raw: Any, where: str, present: bool) -> Rolling | Fixed | None:
        if not present:
            self.fail(where, "period is required")
            return None
        if not isinstance(raw, dict):
            self.fail(where, f"period must be an object, not {_json_type(raw)}")
            return None
        kind = raw.get("type")
        keys = {"rolling": ("type", "unit", "value"), "fixed": ("type", "start_date", "end_date")}
        if kind not in keys:
            self.fail(pointer(where, "type"), "period type must be rolling or fixed")
            return None
        for key in raw:
            if key not in keys[kind]:
                self.fail(pointer(where, key), f"unknown field {key!r}")
        if kind == "rolling":
            unit: Any = raw.get("unit")  # checked below before it is used
            value: Any = raw.get("value")
            ok = True
            if unit not in UNIT_MS:
                self.fail(pointer(where, "unit"), f"unit must be one of {', '.join(UNIT_MS)}")
                ok = False
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                self.fail(pointer(where, "value"), "value must be a positive integer")
                ok = False
            return Rolling(unit, value) if ok else None
        start = self.date(raw, "start_date", where, True)
        end = self.date(raw, "end_date", where, False)
        if start is None or (end is None and raw.get("end_date") is not None):
            return None
        return Fixed(start, end)

    def date(self, raw: dict[str, Any], key: str, where: str, required: bool) -> int | None:
        value = raw.get(key)
        if value is None:
            if required:
                self.fail(pointer(where, key), f"{key} is required")
            return None
        ms = parse_date(value) if isinstance(value, str) else None
        if ms is None:
            self.fail(pointer(where, key), f"{key} must be an ISO 8601 date-time text")
        return ms


class Rule(msgspec.Struct, frozen=True):
    """A parsed tree. `root` is its typed form; the tree as received is stored apart."""

    root: Node


def parse_rule(raw: Any, now: int) -> Rule:
    """Check a tree as received (decoded JSON) and type it. Templates are rendered once with
    `now` to refuse those that fail. Raises RuleInvalid listing every problem."""
    parser = _Parser(now)
    root = parser.node(raw, "", 1, False)
    if parser.count > MAX_NODES:
        parser.problems.insert(0, ("", f"the tree has more than {MAX_NODES} nodes"))
    if parser.problems:
        raise RuleInvalid(parser.problems)
    assert root is not None
    return Rule(root)


def walk(node: Node) -> list[Node]:
    """Every node of a subtree, the node first."""
    out: list[Node] = [node]
    if not isinstance(node, Condition):
        for child in node.children:
            out.extend(walk(child))
    return out
