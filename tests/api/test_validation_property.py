"""The fast typed path (schemas) and the slow listing path (validation) must agree: a body the
fast path takes has no problems, and a body it rejects has at least one, each with a JSON Pointer
into the body."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from pier.api import schemas, validation

NOW = 1_800_000_000_000  # 2027-01-15
DAY = 86_400_000
PROPS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- values ----------------------------------------------------------------------------------
# Bodies are mostly valid with a few bad parts, so both answers (taken / rejected) are common.
short_text = st.text(max_size=8)
some_text = st.text(min_size=1, max_size=8)


def sized(n: int) -> st.SearchStrategy[str]:
    """Strings around the limit n: at and just over it, astral characters counting as one."""
    return st.sampled_from(["x" * n, "x" * (n + 1), "\U0001f600" * n, "\U0001f600" * (n + 1)])


json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    short_text,
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """`good` nine times in ten, else `bad`."""
    return draw(bad) if draw(st.integers(0, 9)) == 0 else draw(good)


def string_field(limit: int) -> st.SearchStrategy[Any]:
    """A string field: good (text, empty, null, at the limit) or bad (too long, wrong type)."""
    good = st.one_of(some_text, st.just(""), st.none(), st.just("x" * limit))
    bad = st.one_of(sized(limit), json_value)
    return mostly(good, bad)


timezones = mostly(
    st.sampled_from(
        ["UTC", "utc", "America/Chicago", "america/chicago", "EUROPE/PARIS", " utc ", "Etc/GMT+5"]
    )
    | st.none(),
    st.sampled_from(["Mars/Olympus", "", "GMT+25", "+02:00", "x" * 51, "America/"]) | json_value,
)
data_field = mostly(
    st.dictionaries(short_text, json_value, max_size=3) | st.none(),
    json_value,
)
EVENT_KEYS = (
    "name",
    "anonymous_id",
    "external_id",
    "message_id",
    "data",
    "properties",
    "user",
    "timestamp",
)
unknown_key = st.text(min_size=1, max_size=6).filter(
    lambda k: k not in validation.IDENTIFY_FIELDS and k not in EVENT_KEYS
)
PROFILE = {"email": 255, "phone": 64, "locale": 50}


@st.composite
def some_of(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """An object with a random subset of `fields` (each present or left out)."""
    return {k: draw(v) for k, v in fields.items() if draw(st.booleans())}


def traits_fields() -> dict[str, st.SearchStrategy[Any]]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "anonymous_id": string_field(255),
        "external_id": string_field(255),
        "timezone": timezones,
        "data": data_field,
    }
    fields.update({k: string_field(n) for k, n in PROFILE.items()})
    return fields


@st.composite
def with_unknown_keys(draw: st.DrawFn, obj: dict[str, Any]) -> dict[str, Any]:
    if draw(st.integers(0, 9)) == 0:
        obj.update(draw(st.dictionaries(unknown_key, json_value, min_size=1, max_size=2)))
    return obj


@st.composite
def identify_body(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 29)) == 0:
        return draw(json_value)  # not an object, mostly
    return draw(with_unknown_keys(draw(some_of(traits_fields()))))


def iso(ms: int, offset: str) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + offset


in_range = st.integers(validation.MIN_TIME_MS, NOW + DAY)
timestamps = mostly(
    st.one_of(
        in_range,
        st.builds(iso, in_range.map(lambda ms: min(ms, NOW)), st.sampled_from(["Z", "+00:00"])),
        st.sampled_from([validation.MIN_TIME_MS, NOW + DAY]),
        st.none(),
    ),
    st.one_of(
        st.integers(validation.MIN_TIME_MS - DAY, NOW + 2 * DAY),
        st.sampled_from([validation.MIN_TIME_MS - 1, NOW + DAY + 1]),
        st.builds(
            iso,
            st.integers(validation.MIN_TIME_MS - DAY, NOW + 2 * DAY),
            st.sampled_from(["Z", "+02:00", "-05:30", ""]),
        ),
        st.sampled_from(["yesterday", "2026-13-01T00:00:00Z", "", "2026-01-01"]),
        st.booleans(),
        st.floats(0, 2e12, allow_nan=False),
        json_value,
    ),
)


@st.composite
def event_obj(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 49)) == 0:
        return draw(json_value)
    user = mostly(st.none() | some_of(traits_fields()), json_value)
    fields = {
        "name": mostly(some_text, string_field(255)),
        "anonymous_id": string_field(255),
        "external_id": string_field(255),
        "message_id": string_field(255),
        "data": data_field,
        "properties": data_field,
        "user": user,
        "timestamp": timestamps,
    }
    event = draw(some_of(fields))
    if draw(st.integers(0, 9)) != 0:  # name is required: mostly there
        event["name"] = draw(fields["name"])
    return draw(with_unknown_keys(event))


VALID_EVENT = {"name": "open", "anonymous_id": "a1"}


@st.composite
def events_body(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 39))
    if kind == 0:
        return draw(json_value)
    if kind == 1:  # at and over the 1,000 events limit
        n = draw(st.sampled_from([validation.MAX_EVENTS, validation.MAX_EVENTS + 1]))
        return [VALID_EVENT] * n
    return draw(st.lists(event_obj(), max_size=3))


# -- JSON Pointers ---------------------------------------------------------------------------
def resolves(body: Any, path: str) -> bool:
    """True when `path` names a place in `body`, or a missing key of an object in it."""
    if path == "":
        return True
    node = body
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
    for i, token in enumerate(tokens):
        last = i == len(tokens) - 1
        if isinstance(node, dict):
            if token not in node:
                return last  # a required key that is missing
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return True


# -- the properties --------------------------------------------------------------------------
def fast_identify(raw: bytes) -> bool:
    try:
        schemas.identify(raw, 1)
    except schemas.Rejected:
        return False
    return True


def fast_events(raw: bytes) -> bool:
    try:
        schemas.events(raw, NOW, 0)
    except schemas.Rejected:
        return False
    return True


@PROPS
@given(identify_body())
def test_identify_fast_and_slow_paths_agree(body: Any) -> None:
    raw = msgspec.json.encode(body)
    decoded = msgspec.json.decode(raw)  # what ingest decodes when the fast path rejects
    problems = validation.problems_identify(decoded)
    assert fast_identify(raw) == (problems == []), problems
    for p in problems:
        assert resolves(decoded, p.path), p


@PROPS
@given(events_body())
def test_events_fast_and_slow_paths_agree(body: Any) -> None:
    raw = msgspec.json.encode(body)
    decoded = msgspec.json.decode(raw)
    problems = validation.problems_events(decoded, NOW)
    assert fast_events(raw) == (problems == []), problems
    for p in problems:
        assert resolves(decoded, p.path), p


@PROPS
@given(identify_body())
def test_identify_command_matches_the_body(body: Any) -> None:
    raw = msgspec.json.encode(body)
    try:
        cmd = schemas.identify(raw, 7)
    except schemas.Rejected:
        return
    assert cmd.project_id == 7
    assert cmd.anonymous_id == (body.get("anonymous_id") or None)
    assert cmd.external_id == (body.get("external_id") or None)
    assert cmd.anonymous_id or cmd.external_id
    tz = body.get("timezone", UNSET)
    if isinstance(tz, str):
        assert cmd.traits.timezone == validation.canonical_timezone(tz)
    else:
        assert cmd.traits.timezone == tz
    for key in PROFILE:
        assert getattr(cmd.traits, key) == body.get(key, UNSET)
    data = body.get("data", UNSET)
    assert cmd.traits.data == (UNSET if data is None else data)  # data: null keeps data


# -- examples --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sent", "stored"), [("america/chicago", "America/Chicago"), ("utc", "UTC")]
)
def test_identify_stores_canonical_timezones(sent: str, stored: str) -> None:
    cmd = schemas.identify(msgspec.json.encode({"anonymous_id": "a", "timezone": sent}), 1)
    assert cmd.traits.timezone == stored


def test_identify_invalid_timezone_message() -> None:
    body = {"anonymous_id": "a", "timezone": "Mars/Olympus"}
    with pytest.raises(schemas.Rejected):
        schemas.identify(msgspec.json.encode(body), 1)
    [problem] = validation.problems_identify(body)
    assert (problem.path, problem.message) == (
        "/timezone",
        "The timezone value must be in the IANA format.",
    )


def test_identify_null_external_id_alone_is_refused() -> None:
    body = {"external_id": None}
    with pytest.raises(schemas.Rejected):
        schemas.identify(msgspec.json.encode(body), 1)
    assert [p.path for p in validation.problems_identify(body)] == [""]


def test_events_properties_alias_data_and_data_wins() -> None:
    body = [{"name": "x", "external_id": "e", "properties": {"a": 1, "b": 1}, "data": {"b": 2}}]
    [event] = schemas.events(msgspec.json.encode(body), NOW, 0)
    assert event.data == {"a": 1, "b": 2}


def test_problem_paths_escape_keys() -> None:
    problems = validation.problems_identify({"anonymous_id": "a", "a/b~c": 1})
    assert [p.path for p in problems] == ["/a~1b~0c"]


# -- nesting: the bracket scan against the parsed value --------------------------------------
def depth(value: Any) -> int:
    """Levels of objects and arrays, as MAX_DEPTH counts them."""
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return 0
    return 1 + max(map(depth, value), default=0)


# Brackets, quotes and backslashes in strings and keys: what the scan must see through
bracket_text = st.text(alphabet='{}[]"\\a', max_size=4)
nested_json = st.recursive(
    st.one_of(st.none(), st.integers(), bracket_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(bracket_text, inner, max_size=3)
    ),
    max_leaves=40,
)


@PROPS
@given(nested_json, st.integers(0, 8))
def test_nested_deeper_finds_the_depth_of_any_json(value: Any, limit: int) -> None:
    raw = msgspec.json.encode(value)
    assert validation.nested_deeper(raw, limit) == (depth(value) > limit)
