"""Hypothesis strategies for rule trees (docs/segments-contract.md) and users with events, in
the fixture file's shapes, over a small vocabulary so that trees often match."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from pier.domain.segments.values import parse_date

NOW = parse_date("2024-06-15T12:00:00.250Z")
DAY = 86_400_000

SCALARS = st.sampled_from(
    [
        "x",
        "",
        "vip",
        "vip2",
        "10",
        " 5 ",
        "1e3",
        "-3.5",
        ".5",
        "true",
        "abc",
        "2024-03-01",
        "2024-03-01T10:00:00Z",
        "2024-05-16 12:30:00.5+02:00",
        "2024-06-14T12:00:00Z",
        "2024-02-30",
        "1700000000",
        "0x10",
        "café",
        "100%",
        0,
        1,
        -3,
        10,
        2.5,
        30.0,
        1e21,
        1.5e-7,
        1709287200000,
        True,
        False,
        None,
    ]
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["x", "y", "a.b"]), inner, max_size=2)
    ),
    max_leaves=5,
)
USER_KEYS = ["a", "b", "tags", "o", "x y", "café", "email", "id", "created_at"]
EVENT_KEYS = ["item", "price", "tags", "o", "name", "created_at"]
USER_PATHS = [
    "$.a",
    "$.b",
    "$.tags",
    "$.tags[*]",
    "$.tags[0]",
    "$.o.x",
    "$.o[*]",
    "$.o['a.b']",
    "$[*]",
    "$.email",
    "$.external_id",
    "$.created_at",
    "$['x y']",
    "$['café']",
    "a",
    "$.id",
    "$",
]
EVENT_PATHS = [
    "$.item",
    "$.price",
    "$.tags[*]",
    "$.tags",
    "$.o.x",
    "$.created_at",
    "$.name",
    "$[*]",
]
VALUES = {
    "string": ["x", "", "vip", "10", "true", "2024", 10, True, None, '{{now "yyyy"}}'],
    "number": ["10", 0, -3, "2.5", 1e21, 5, '{{dateDiff "now" "2024-06-01"}}'],
    "boolean": ["", True, False, "true", "false", 0, 1, None],
    "date": [
        "2024-03-01",
        "2024-03-01T10:00:00Z",
        1709287200000,
        '{{subDate "now" 30 "days"}}',
        "{{now}}",
        '{{addDate "now" 1 "months"}}',
        '{{subDate "now" 1 "days"}}',
    ],
    "array": ["vip", "10", 10, ""],
}
OPERATORS = {
    "string": [
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
    ],
    "number": ["=", "!=", "<", "<=", ">", ">=", "is set", "is not set"],
    "boolean": ["=", "!="],
    "date": ["=", "!=", "<", "<=", ">", ">=", "is same day", "is set", "is not set"],
    "array": ["is set", "is not set", "empty", "contains"],
}
INSTANTS = [
    NOW,
    NOW - 1,
    NOW - 3_600_000,
    NOW - DAY,
    NOW - 7 * DAY,
    NOW - 7 * DAY - 1,
    NOW - 30 * DAY,
    NOW - 400 * DAY,
    NOW + DAY,
]


@st.composite
def conditions(draw: st.DrawFn, paths: list[str]) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(OPERATORS)))
    node = {
        "type": kind,
        "group": "user",
        "path": draw(st.sampled_from(paths)),
        "operator": draw(st.sampled_from(OPERATORS[kind])),
    }
    if draw(st.booleans()) or node["operator"] not in ("is set", "is not set", "empty"):
        node["value"] = draw(st.sampled_from(VALUES[kind]))
    return node


def wrappers(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda op, kids: (
            {"type": "wrapper", "group": "user", "path": "$", "operator": op}
            | ({"children": kids} if kids is not None else {})
        ),
        st.sampled_from(["and", "or", "none", "xor"]),
        st.none() | st.lists(children, max_size=3),
    )


@st.composite
def frequencies(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        period = {
            "type": "rolling",
            "unit": draw(st.sampled_from(["minute", "hour", "day", "week", "month", "year"])),
            "value": draw(st.integers(1, 8)),
        }
    else:
        period = {"type": "fixed", "start_date": "2024-06-08T12:00:00.250Z"}
        if draw(st.booleans()):
            period["end_date"] = "2024-06-14T12:00:00.250Z"
    return {
        "period": period,
        "operator": draw(st.sampled_from(["=", "<", "<=", ">", ">="])),
        "count": draw(st.integers(0, 3)),
    }


@st.composite
def event_wrappers(draw: st.DrawFn) -> dict[str, Any]:
    inner = st.recursive(conditions(EVENT_PATHS), wrappers, max_leaves=3)
    node = {
        "type": "wrapper",
        "group": "event",
        "path": "$.name",
        "operator": draw(st.sampled_from(["and", "or", "none", "xor"])),
        "value": draw(st.sampled_from(["buy", "view"])),
        "children": draw(st.lists(inner, max_size=2)),
    }
    if draw(st.booleans()):
        node["frequency"] = draw(frequencies())
    return node


def _with_uuids(node: dict[str, Any], counter: list[int]) -> dict[str, Any]:
    counter[0] += 1
    node = dict(node, uuid=f"n{counter[0]}")
    if node.get("children"):
        node["children"] = [_with_uuids(c, counter) for c in node["children"]]
    return node


TREES = st.builds(
    lambda kids, op: _with_uuids(
        {"type": "wrapper", "group": "parent", "path": "$", "operator": op, "children": kids}, [0]
    ),
    st.lists(
        st.recursive(conditions(USER_PATHS) | event_wrappers(), wrappers, max_leaves=4),
        max_size=3,
    ),
    st.sampled_from(["and", "or", "none", "xor"]),
)

EVENTS = st.builds(
    lambda name, data, at: {"name": name, "data": data, "created_at": at},
    st.sampled_from(["buy", "view", "other"]),
    st.dictionaries(st.sampled_from(EVENT_KEYS), JSON, max_size=3),
    st.sampled_from(INSTANTS),
)


def _user(i: int, profile: tuple[Any, ...], data: dict[str, Any], events: list[Any]) -> dict:
    email, external_id, created_at = profile
    return {
        "ref": f"u{i}",
        "external_id": None if external_id is None else f"{external_id}{i}",
        "email": email,
        "phone": None,
        "timezone": None,
        "locale": "fr",
        "created_at": created_at,
        "data": data,
        "events": events,
    }


USERS = st.lists(
    st.tuples(
        st.tuples(
            st.sampled_from([None, "a@x.fr", "vip", "", "10"]),
            st.sampled_from([None, "vip", "x-1"]),
            st.sampled_from(INSTANTS),
        ),
        st.dictionaries(st.sampled_from(USER_KEYS), JSON, max_size=4),
        st.lists(EVENTS, max_size=4),
    ),
    min_size=1,
    max_size=3,
).map(lambda users: [_user(i, *u) for i, u in enumerate(users)])
