"""Rule trees in the domain (domain/segments): what is refused and where, the template helpers,
evaluation errors, what a rule depends on, and when membership can change with no new data."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pier.domain.segments import (
    MAX_DEPTH,
    Evaluator,
    RuleError,
    RuleInvalid,
    dependencies,
    event_document,
    member,
    next_change,
    next_look,
    parse_rule,
    user_document,
)
from pier.domain.segments.templates import TemplateError, parse_template
from pier.domain.segments.values import js_number_text, parse_date, parse_number
from support.segment_trees import NOW, TREES, USERS

DAY = 86_400_000
# the random-tree properties' settings
EXAMPLES = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OFFSET = st.integers(0, 800 * DAY)


def cond(uuid: str = "c", **fields: Any) -> dict[str, Any]:
    node = {"uuid": uuid, "type": "string", "group": "user", "path": "$.plan", "operator": "="}
    node["value"] = "pro"
    return node | fields


def root(*children: dict[str, Any], **fields: Any) -> dict[str, Any]:
    node = {"uuid": "r", "type": "wrapper", "group": "parent", "path": "$", "operator": "and"}
    return node | {"children": list(children)} | fields


def event(uuid: str = "e", *children: dict[str, Any], **fields: Any) -> dict[str, Any]:
    node = {"uuid": uuid, "type": "wrapper", "group": "event", "path": "$.name"}
    node |= {"operator": "and", "value": "purchased", "children": list(children)}
    return node | fields


def problems(tree: Any, now: int = NOW) -> list[tuple[str, str]]:
    with pytest.raises(RuleInvalid) as caught:
        parse_rule(tree, now)
    return caught.value.problems


REFUSED = [
    (root(cond(extra=1)), "/children/0/extra", "unknown field"),
    (root(cond(type="text")), "/children/0/type", "unknown type"),
    (root(cond(group="users")), "/children/0/group", "unknown group"),
    (root(cond(operator="like")), "/children/0/operator", "unknown operator"),
    (root(cond(type="number", operator="contains")), "/children/0/operator", "unknown operator"),
    (root(cond(type="array", operator="=")), "/children/0/operator", "use contains"),
    (root(cond(operator="any")), "/children/0/operator", "value lists"),
    (root(cond(value=["pro"])), "/children/0/value", "must not be an array"),
    (root(cond(value={"a": 1})), "/children/0/value", "must not be an object"),
    (root(cond(path=7)), "/children/0/path", "must be a string"),
    (root(cond(path="$..plan")), "/children/0/path", "not supported"),
    (root(cond(path="$.tags[?(@.x)]")), "/children/0/path", "not supported"),
    (root(cond(path="$.tags[1:2]")), "/children/0/path", "not supported"),
    (
        root({k: v for k, v in cond().items() if k != "operator"}),
        "/children/0/operator",
        "required",
    ),
    (root({k: v for k, v in cond().items() if k != "uuid"}), "/children/0/uuid", "required"),
    (root(cond(), cond()), "/children/1/uuid", "used twice"),
    (root(cond(children=[cond("x")])), "/children/0/children", "cannot have children"),
    (root(cond(frequency={})), "/children/0/frequency", "cannot have frequency"),
    (root(cond(value="{{now")), "/children/0/value", "template"),
    (root(cond(value="{{lowercase 'X'}}")), "/children/0/value", "unknown helper"),
    (root(cond(value="{{#if x}}a{{/if}}")), "/children/0/value", "block helpers"),
    (root(cond(value='{{subDate "now" 1 "parsecs"}}')), "/children/0/value", "not a unit"),
    (root(cond(type="date", value='{{now "dd/MM"}}')), "/children/0/value", "not a date"),
    (root(cond(type="date", value="yesterday")), "/children/0/value", "not a date"),
    (root(cond(type="date", value=True)), "/children/0/value", "not a date"),
    (root(cond(type="number", operator=">", value="")), "/children/0/value", "not a number"),
    (root(cond(type="number", operator=">", value="0x10")), "/children/0/value", "not a number"),
    (root(cond(type="number", operator=">")) | {}, "/children/0/value", "not a number"),
    (root(cond(type="boolean", value="yes")), "/children/0/value", "boolean rule"),
    (root(cond(type="boolean", value=2)), "/children/0/value", "boolean rule"),
    (root(cond(type="boolean", operator="is set")), "/children/0/operator", "unknown operator"),
    (root(operator="nand"), "/operator", "unknown operator"),
    (root(frequency={"period": None}), "/frequency", "only event wrappers"),
    (root(children={"a": 1}), "/children", "must be an array"),
    (root("plan"), "/children/0", "must be an object"),
    ([], "", "must be an object"),
    (root(event(value="")), "/children/0/value", "event name"),
    (root(event(value=None)), "/children/0/value", "event name"),
    (root(event(path="$.event")), "/children/0/path", '"$.name"'),
    (root(event("e", event("e2"))), "/children/0/children/0", "inside another event wrapper"),
    (root(event("e", cond(), operator="=")), "/children/0/operator", "unknown operator"),
    (
        root(event(frequency={"period": {"type": "rolling", "unit": "day", "value": 7}})),
        "/children/0/frequency/operator",
        "required",
    ),
    (
        root(event(frequency={"operator": ">=", "count": 1})),
        "/children/0/frequency/period",
        "required",
    ),
    (
        root(
            event(
                frequency={
                    "period": {"type": "rolling", "unit": "day", "value": 7},
                    "operator": "!=",
                    "count": 1,
                }
            )
        ),
        "/children/0/frequency/operator",
        "unknown count operator",
    ),
    (
        root(
            event(
                frequency={
                    "period": {"type": "rolling", "unit": "day", "value": 7},
                    "operator": ">=",
                    "count": 1.5,
                }
            )
        ),
        "/children/0/frequency/count",
        "integer",
    ),
    (
        root(
            event(
                frequency={
                    "period": {"type": "rolling", "unit": "days", "value": 0},
                    "operator": ">=",
                    "count": 1,
                }
            )
        ),
        "/children/0/frequency/period/unit",
        "unit must be",
    ),
    (
        root(
            event(
                frequency={
                    "period": {"type": "rolling", "unit": "day", "value": 0},
                    "operator": ">=",
                    "count": 1,
                }
            )
        ),
        "/children/0/frequency/period/value",
        "positive integer",
    ),
    (
        root(
            event(
                frequency={
                    "period": {"type": "fixed", "start_date": "{{now}}"},
                    "operator": ">=",
                    "count": 1,
                }
            )
        ),
        "/children/0/frequency/period/start_date",
        "ISO 8601",
    ),
    (
        root(
            event(
                frequency={
                    "period": {"type": "fixed", "start_date": "2024-01-01", "end_date": 5},
                    "operator": ">=",
                    "count": 1,
                }
            )
        ),
        "/children/0/frequency/period/end_date",
        "ISO 8601",
    ),
    (
        root(event(frequency={"period": {"type": "weekly"}, "operator": ">=", "count": 1})),
        "/children/0/frequency/period/type",
        "rolling or fixed",
    ),
    (
        root(
            event(
                frequency={
                    "period": {"type": "rolling", "unit": "day", "value": 1, "x": 1},
                    "operator": ">=",
                    "count": 1,
                    "y": 2,
                }
            )
        ),
        "/children/0/frequency/y",
        "unknown field",
    ),
]


@pytest.mark.parametrize(("tree", "where", "message"), REFUSED)
def test_a_tree_that_breaks_the_format_is_refused_with_the_pointer(
    tree: Any, where: str, message: str
) -> None:
    found = problems(tree)
    assert any(p == where and message in m for p, m in found), found


def test_every_problem_is_listed_with_its_pointer() -> None:
    tree = root(
        cond("a", operator="like"),
        cond("b", value=[1]),
        root(cond("c", extra=True), uuid="inner", group="user"),
        event("e", cond("d", path="$..x")),
    )
    assert {p for p, _ in problems(tree)} == {
        "/children/0/operator",
        "/children/1/value",
        "/children/2/children/0/extra",
        "/children/3/children/0/path",
    }


def nested(depth: int) -> dict[str, Any]:
    node = cond("leaf")
    for i in range(depth - 1):
        node = root(node, uuid=f"w{i}", group="user")
    return node


def test_twenty_levels_pass_and_the_twenty_first_is_refused() -> None:
    parse_rule(nested(MAX_DEPTH), NOW)
    found = problems(nested(MAX_DEPTH + 1))
    assert found == [("/children/0" * MAX_DEPTH, "the tree is more than 20 levels deep")]


def test_five_hundred_nodes_pass_and_more_are_refused() -> None:
    parse_rule(root(*[cond(f"c{i}") for i in range(499)]), NOW)
    found = problems(root(*[cond(f"c{i}", operator="like") for i in range(5000)]))
    assert found[0] == ("", "the tree has more than 500 nodes")
    assert len(found) == 500  # the first 499 conditions' problems, and no more


def test_accepted_shapes_of_parcelvoy_trees() -> None:
    """ids, null links, null children, old operators, an event wrapper's `=` without
    children, a value ignored by its operator."""
    tree = root(
        cond(id=12, root_uuid="r", parent_uuid="r", children=[], frequency=None),
        event("e", operator="="),
        root(uuid="w", group="user", operator="xor", children=None),
        cond("s", operator="is set", value=None),
        cond("n", type="number", operator="is set", value="abc"),
        id=None,
        root_uuid=None,
        parent_uuid=None,
        operator="none",
    )
    parse_rule(tree, NOW)


# -- values and templates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (30.0, "30"),
        (1.5, "1.5"),
        (-0.0, "0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (123.456, "123.456"),
        (-2.5e30, "-2.5e+30"),
    ],
)
def test_numbers_are_written_as_javascript_does(x: float, text: str) -> None:
    assert js_number_text(x) == text


@pytest.mark.parametrize(
    ("text", "x"),
    [
        ("-12", -12.0),
        (" 3.5\n", 3.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("+5", 5.0),
        ("5.", 5.0),
        ("", None),
        ("abc", None),
        ("0x10", None),
        ("1_000", None),
        ("Infinity", None),
        ("nan", None),
        ("1e400", None),
        ("1e-400", None),
        ("٣", None),
    ],
)
def test_numeric_text(text: str, x: float | None) -> None:
    assert parse_number(text) == x


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2024-03-01", "2024-03-01T00:00:00.000Z"),
        ("2024-03-01T10:00", "2024-03-01T10:00:00.000Z"),
        ("2024-03-01 10:00:00.123999", "2024-03-01T10:00:00.123Z"),
        ("2024-03-01T10:00:00+02:00", "2024-03-01T08:00:00.000Z"),
        ("2024-03-01T00:30:00-01:30", "2024-03-01T02:00:00.000Z"),
        ("2024-02-29T23:59:59Z", "2024-02-29T23:59:59.000Z"),
    ],
)
def test_iso_dates(text: str, iso: str) -> None:
    assert parse_date(text) == parse_date(iso)


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29",
        "2024-13-01",
        "2024-03-01T24:00",
        "2024-03-01Z",
        "1700000000",
        "March 1",
        "2024-03-01T10:00:00+24:00",
        "2024-3-1",
        "2024-03-01t10:00",
    ],
)
def test_not_dates(text: str) -> None:
    assert parse_date(text) is None


AT = parse_date("2024-06-15T12:00:00.250Z")  # a Saturday


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("{{now}}", "2024-06-15 12:00:00"),
        ('{{now "yyyy-MM-dd"}}', "2024-06-15"),
        ('{{now "HH:mm" "Europe/Paris"}}', "14:00"),
        ('{{dateFormat "2024-01-02T03:04:05Z" "dd/MM/yyyy HH:mm:ss"}}', "02/01/2024 03:04:05"),
        ('{{subDate "now" 30 "days"}}', "2024-05-16T12:00:00Z"),
        ('{{subtractDate "now" "1" "day"}}', "2024-06-14T12:00:00Z"),
        ('{{addDate "2024-01-31" 1 "months"}}', "2024-02-29T00:00:00Z"),
        ('{{subDate "2024-03-31" 1 "month"}}', "2024-02-29T00:00:00Z"),
        ('{{addDate "2024-02-29" 1 "years"}}', "2025-02-28T00:00:00Z"),
        ('{{addDate "now" 2 "weeks"}}', "2024-06-29T12:00:00Z"),
        ('{{addDate "now" 90 "minutes"}}', "2024-06-15T13:30:00Z"),
        ('{{addDate 0 1.9 "seconds"}}', "1970-01-01T00:00:01Z"),
        ('{{setDate "now" "years" 2020}}', "2020-06-15T12:00:00Z"),
        ('{{setDate "now" "months" 2}}', "2024-02-15T12:00:00Z"),
        ('{{setDate "2024-01-31" "months" 2}}', "2024-02-29T00:00:00Z"),
        ('{{setDate "now" "days" 1}}', "2024-06-01T12:00:00Z"),
        ('{{setDate "now" "hours" 0}}', "2024-06-15T00:00:00Z"),
        ('{{setDate "now" "minutes" 5}}', "2024-06-15T12:05:00Z"),
        ('{{setDate "now" "seconds" 9}}', "2024-06-15T12:00:09Z"),
        ('{{nextDate "now" "mo"}}', "2024-06-17T12:00:00Z"),
        ('{{nextDate "now" "sa"}}', "2024-06-22T12:00:00Z"),
        ('{{nextDate "now" "su"}}', "2024-06-16T12:00:00Z"),
        ('{{dateDiff "now" "2024-06-01"}}', "14"),
        ('{{dateDiff "2024-06-01" "now"}}', "-14"),
        ('{{dateDiff "now" "2024-01-01" "weeks"}}', "23"),
        ('{{dateDiff "now" "2024-03-15T12:00:01Z" "months"}}', "2"),
        ('{{dateDiff "now" "2023-06-15" "year"}}', "1"),
        ('{{dateFormat (subDate "now" 1 "days") "yyyy-MM-dd"}}', "2024-06-14"),
        ("{{user.email}}", ""),
        ("a{{! a comment }}b{{!-- and --}}c", "abc"),
        ('x {{~ now "yyyy" ~}} y', "x2024y"),
        ('{{"<b>"}}|{{{"<b>"}}}|{{&"<b>"}}', "&lt;b&gt;|<b>|<b>"),
        ("abc{def", "abc{def"),
    ],
)
def test_template_helpers(template: str, text: str) -> None:
    assert parse_template(template).render(AT) == text


@pytest.mark.parametrize(
    "template",
    [
        '{{addDate "now" 1 "fortnights"}}',
        '{{addDate "soon" 1 "days"}}',
        '{{nextDate "now" "mon"}}',
        '{{setDate "now" "months" 13}}',
        '{{now "HH" "Mars/Olympus"}}',
        '{{addDate "now" "x" "days"}}',
    ],
)
def test_template_helpers_refuse_bad_arguments(template: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(template).render(AT)


def test_a_stored_tree_that_fails_at_evaluation_names_its_node() -> None:
    tree = root(cond(type="date", path="$.d", operator=">", value='{{addDate "now" 7000 "years"}}'))
    rule = parse_rule(tree, AT)  # year 9024: valid when saved
    later = parse_date("3100-01-01")
    with pytest.raises(RuleError) as caught:
        member(rule, user({"d": "2024-01-01"}), [], later)
    assert caught.value.pointer == "/children/0/value"


# -- evaluation -----------------------------------------------------------------------------


def user(data: dict[str, Any], **columns: Any) -> dict[str, Any]:
    profile = {"external_id": None, "email": None, "phone": None, "timezone": None}
    profile |= {"locale": None, "created_at": 0} | columns
    return user_document(data, **profile)


def documents(u: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A generated user's document and its events' (support.segment_trees.USERS)."""
    person = user(u["data"], external_id=u["external_id"], email=u["email"],
                  locale=u["locale"], created_at=u["created_at"])  # fmt: skip
    return person, [event_document(e["name"], e["created_at"], e["data"]) for e in u["events"]]


def test_fixed_period_bounds_are_inclusive_and_counts_are_exact() -> None:
    period = {"type": "fixed", "start_date": "2024-05-01T00:00:00Z", "end_date": "2024-05-31"}
    tree = root(event(frequency={"period": period, "operator": "=", "count": 2}))
    rule = parse_rule(tree, AT)
    at = [
        parse_date(t)
        for t in ("2024-05-01T00:00:00Z", "2024-05-31T00:00:00Z", "2024-05-31T00:00:00.001Z")
    ]
    events = [event_document("purchased", t, {}) for t in at]
    assert member(rule, user({}), events[:2], AT)
    assert not member(rule, user({}), events[:1], AT)
    assert member(rule, user({}), events, AT)  # the third lies after the end


# -- dependencies ---------------------------------------------------------------------------


def test_dependencies() -> None:
    rolling = {
        "period": {"type": "rolling", "unit": "day", "value": 30},
        "operator": ">=",
        "count": 1,
    }
    tree = root(
        cond("a", path="plan"),
        root(cond("b", path="$['a.b'].c", value='{{now "yyyy"}}'), uuid="w", group="user"),
        event("e", cond("c", path="$.price"), frequency=rolling),
        event("f", value="login"),
    )
    deps = dependencies(parse_rule(tree, AT))
    assert deps.events == {"purchased", "login"}
    assert deps.profile_keys == {"plan", "a.b"}
    assert deps.time

    fixed = {"period": {"type": "fixed", "start_date": "2024-01-01"}, "operator": ">=", "count": 1}
    deps = dependencies(parse_rule(root(event(frequency=fixed), cond(path="$[*]")), AT))
    assert deps.profile_keys is None and not deps.time
    assert dependencies(parse_rule(root(), AT)).profile_keys == frozenset()


def test_rising_names_and_fading_rules() -> None:
    """`rising`: "at least" counts under and/or only; `fading`: all rising and no `now`."""

    def deps(tree: dict[str, Any]) -> tuple[set[str], bool]:
        found = dependencies(parse_rule(tree, AT))
        return set(found.rising), found.fading

    def count(op: str, name: str = "purchased", uuid: str = "p") -> dict[str, Any]:
        return event(uuid, value=name, frequency={"period": {"type": "rolling", "unit": "day",
                     "value": 30}, "operator": op, "count": 1})  # fmt: skip

    assert deps(root(count(">="), count(">", "login", "l"), event("v", value="viewed"))) == (
        {"purchased", "login", "viewed"},
        True,
    )
    for op in ("=", "<", "<="):
        assert deps(root(count(op))) == (set(), False)
    for op in ("none", "xor"):
        assert deps(root(root(count(">="), uuid="w", group="user", operator=op))) == (set(), False)
    # a name counted twice, once where more events can turn the rule false
    twice = root(count(">=", uuid="q"), uuid="w", group="user", operator="none")
    assert deps(root(count(">="), twice)) == (
        set(),
        False,
    )
    soon = cond("d", type="date", path="$.trial", operator="<", value="{{now}}")
    assert deps(root(count(">="), soon)) == ({"purchased"}, False)  # `now` can bring users in


# -- next_change ----------------------------------------------------------------------------


def test_a_rolling_window_changes_when_the_last_event_ages_out() -> None:
    """ "Did purchase in the last 30 days": the user leaves 1 ms after the last purchase is
    30 days old."""
    rolling = {
        "period": {"type": "rolling", "unit": "day", "value": 30},
        "operator": ">=",
        "count": 1,
    }
    rule = parse_rule(root(event(frequency=rolling)), AT)
    last = AT - 10 * DAY
    events = [event_document("purchased", t, {}) for t in (AT - 20 * DAY, last)]
    at = next_change(rule, user({}), events, AT)
    assert at == last + 30 * DAY + 1
    assert member(rule, user({}), events, at - 1)
    assert not member(rule, user({}), events, at)
    assert next_change(rule, user({}), [], AT) is None


def test_a_relative_date_changes_when_now_passes_the_value() -> None:
    rule = parse_rule(
        root(cond(type="date", path="$.seen", operator=">", value='{{subDate "now" 30 "days"}}')),
        AT,
    )
    person = user({"seen": "2024-06-01T00:00:00Z"})
    at = next_change(rule, person, [], AT)
    assert at is not None
    assert member(rule, person, [], at - 1) and not member(rule, person, [], at)
    assert at == parse_date("2024-07-01T00:00:00Z")  # 30 days later, `>` stops holding


def test_a_rule_without_time_never_changes_by_itself() -> None:
    rule = parse_rule(root(cond(), event()), AT)
    assert next_change(rule, user({"plan": "pro"}), [], AT) is None


@EXAMPLES
@given(tree=TREES, users=USERS, offsets=st.lists(st.floats(0, 1, exclude_max=True), max_size=4))
def test_membership_holds_until_next_change(
    tree: dict[str, Any], users: list[dict[str, Any]], offsets: list[float]
) -> None:
    """At every instant in [now, next_change) membership is what it is at now."""
    rule = parse_rule(tree, NOW)
    for u in users:
        person, events = documents(u)
        now_member = member(rule, person, events, NOW)
        at = next_change(rule, person, events, NOW)
        end = at if at is not None else NOW + 3 * 365 * DAY
        # [NOW, end): NOW + 1 is outside it when the change comes at NOW + 1 (an event exactly
        # a window's length old at NOW leaves it then)
        for t in {NOW + 1, end - 1, *(NOW + int(f * (end - NOW)) for f in offsets)} - {end}:
            assert Evaluator(rule, t).member(person, events) == now_member, (t, at)
        # next_look: no later than next_change, and None only when next_change is too
        look = next_look(rule, person, events, NOW)
        assert Evaluator(rule, NOW).next_look(person, events) == look  # its fast form
        assert (look is None) == (at is None) or (look is not None and at is None)
        if at is not None:
            assert look is not None and NOW < look <= at


@EXAMPLES
@given(tree=TREES, users=USERS, split=st.integers(0, 4))
def test_what_lets_the_incremental_path_skip_a_user(
    tree: dict[str, Any], users: list[dict[str, Any]], split: int
) -> None:
    """The four facts store/common.py relies on to leave a user unevaluated (docs/lists.md):
    `known` is the answer whatever the events; a member stays one when events of `rising` names
    are added; with `fading`, a non-member stays one at every later instant; events that
    `counted` says no wrapper counts, now or later, change no membership at any later instant."""
    rule = parse_rule(tree, NOW)
    deps = dependencies(rule)
    evaluator = Evaluator(rule, NOW)
    for u in users:
        person, events = documents(u)
        now_member = evaluator.member(person, events)
        known = evaluator.known(person)
        assert known is None or known == now_member == evaluator.member(person, [])
        added = [e for e in events[split:] if e["name"] in deps.rising]
        before = events[:split] + [e for e in events[split:] if e["name"] not in deps.rising]
        if evaluator.member(person, before):
            assert now_member, added
        if deps.fading and not now_member:
            for t in (NOW + 1, NOW + DAY, NOW + 400 * DAY):
                assert not Evaluator(rule, t).member(person, events), t
        # events no wrapper counts, now or later, change no membership from now on
        kept = events[:split] + [e for e in events[split:] if evaluator.counted(e)]
        for t in (NOW, NOW + 1, NOW + DAY, NOW + 400 * DAY):
            later = Evaluator(rule, t)
            assert later.member(person, kept) == later.member(person, events), t


@EXAMPLES
@given(tree=TREES, users=USERS, split=st.integers(0, 4), offsets=st.lists(OFFSET, max_size=3))
def test_a_tally_stands_for_the_events(
    tree: dict[str, Any], users: list[dict[str, Any]], split: int, offsets: list[int]
) -> None:
    """For a rule `dependencies` says is tallied, the Tally made at NOW (of some events, then
    the rest added) gives the membership the events give at every later instant, and its
    next_look is one at which the events' membership may change: membership holds before it
    (the lists' cache keeps tallies instead of reading users' events: store/list_cache.py)."""
    rule = parse_rule(tree, NOW)
    if not dependencies(rule).tallied:
        return
    evaluator = Evaluator(rule, NOW)
    for u in users:
        person, events = documents(u)
        tally = evaluator.add(evaluator.tally(events[:split]), evaluator.hits(events[split:]))
        assert tally == evaluator.tally(events)
        for t in {NOW, NOW + 1, *(NOW + abs(o) for o in offsets)}:
            later = Evaluator(rule, t)
            assert later.member(person, tally) == later.member(person, events), t
        look = evaluator.next_look(person, tally)
        end = look if look is not None else NOW + 3 * 365 * DAY
        now_member = evaluator.member(person, events)
        for t in {NOW + 1, end - 1, *(NOW + abs(o) % (end - NOW) for o in offsets)} - {end}:
            assert Evaluator(rule, t).member(person, events) == now_member, (t, look)


ROLLING = st.builds(
    lambda unit, value, op, count, children: event(
        "e",
        *children,
        value="buy",
        frequency={
            "period": {"type": "rolling", "unit": unit, "value": value},
            "operator": op,
            "count": count,
        },
    ),
    st.sampled_from(["minute", "hour", "day", "week", "month", "year"]),
    st.integers(1, 3),
    st.sampled_from(["=", "<", "<=", ">", ">="]),
    st.integers(0, 3),
    st.lists(
        st.sampled_from(
            [
                cond("p", type="number", path="$.price", operator=">", value=5),
                cond(
                    "q",
                    type="date",
                    path="$.created_at",
                    operator=">",
                    value='{{subDate "now" 2 "days"}}',
                ),
            ]
        ),
        max_size=1,
    ),
)
GROWING = st.builds(
    lambda op, template: cond("d", type="date", path="$.seen", operator=op, value=template),
    st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "is same day"]),
    st.sampled_from(
        [
            "{{now}}",
            '{{subDate "now" 30 "days"}}',
            '{{addDate "now" 1 "months"}}',
            '{{nextDate "now" "mo"}}',
            '{{now "yyyy-MM-dd"}}',
            '{{dateFormat (subDate "now" 1 "weeks") "yyyy-MM-dd HH:mm"}}',
        ]
    ),
)
STEPPED = st.sampled_from(
    [
        cond("s", path="$.day", value='{{now "yyyy-MM-dd"}}'),
        cond(
            "n", type="number", path="$.age", operator=">=", value='{{dateDiff "now" "2024-06-01"}}'
        ),
    ]
)
OFFSETS = st.integers(-40 * DAY, 40 * DAY)


WINDOWED = st.builds(
    lambda kids, op: {
        "uuid": "r",
        "type": "wrapper",
        "group": "parent",
        "path": "$",
        "operator": op,
        "children": kids,
    },  # fmt: skip
    st.lists(ROLLING, min_size=1, max_size=2, unique_by=lambda c: c["uuid"])
    | st.lists(ROLLING, min_size=1, max_size=1).map(
        lambda kids: [*kids, cond("u", path="$.external_id", operator="is set")]
    ),
    st.sampled_from(["and", "or", "none", "xor"]),
)


def _answers(evaluator: Evaluator, person: dict[str, Any], events: list[dict[str, Any]]) -> Any:
    """What an evaluator says of a user: membership (from events, and from a tally when the
    rule is tallied), next_look, what the document decides, the counted events; or the error."""
    try:
        tally = evaluator.tally(events) if dependencies(evaluator.rule).tallied else None
        return (
            evaluator.member(person, events),
            None if tally is None else evaluator.member(person, tally),
            evaluator.next_look(person, events),
            evaluator.known(person),
            evaluator.hits(events),
        )
    except RuleError as exc:
        return str(exc)


@EXAMPLES
@given(
    tree=TREES | WINDOWED,
    users=USERS,
    offsets=st.lists(OFFSET, min_size=1, max_size=3),
)
def test_an_evaluator_moved_in_time_answers_as_a_new_one(
    tree: dict[str, Any], users: list[dict[str, Any]], offsets: list[int]
) -> None:
    """Evaluator.at: an evaluator that compiled everything at NOW, then moved to later
    instants (the store keeps them from one batch to the next: SqlTx.evaluator), answers there
    as an evaluator made there. WINDOWED: rolling windows, which the random trees seldom
    have, and are what moves."""
    rule = parse_rule(tree, NOW)
    people = [documents(u) for u in users]
    moved = Evaluator(rule, NOW)
    for t in [NOW, *(NOW + o for o in offsets)]:
        moved = moved.at(t)
        fresh = Evaluator(rule, t)
        for person, events in people:
            assert _answers(moved, person, events) == _answers(fresh, person, events), t


def _outcome(decide: Any, *args: Any) -> Any:
    try:
        return decide(*args)
    except RuleError as exc:
        return str(exc)


@EXAMPLES
@given(tree=TREES | WINDOWED, users=USERS)
def test_the_facts_of_a_user_stand_for_its_document(
    tree: dict[str, Any], users: list[dict[str, Any]]
) -> None:
    """Evaluator.facts / member_by_facts: the user conditions' answers, noted once, decide
    with the events (or their tally) what the document decides with them (the lists' cache
    keeps them instead of reading the document again). When the facts cannot all be
    evaluated (a rule value that fails for this user), the store reads the document."""
    rule = parse_rule(tree, NOW)
    evaluator = Evaluator(rule, NOW)
    tallied = dependencies(rule).tallied
    for u in users:
        person, events = documents(u)
        try:
            facts = evaluator.facts(person)
        except RuleError:
            continue
        expected = _outcome(evaluator.member, person, events)
        assert _outcome(evaluator.member_by_facts, facts, events) == expected
        if tallied:
            tally = evaluator.tally(events)
            assert _outcome(evaluator.member_by_facts, facts, tally) == expected


@settings(max_examples=300, deadline=None, database=None)
@given(
    children=st.lists(
        ROLLING | GROWING | STEPPED, min_size=1, max_size=3, unique_by=lambda c: c["uuid"]
    ),
    op=st.sampled_from(["and", "or", "none", "xor"]),
    bought=st.lists(OFFSETS, max_size=4),
    seen=OFFSETS,
    samples=st.lists(st.floats(0, 1, exclude_max=True), max_size=4),
)
def test_next_change_is_exact_for_windows_and_growing_dates(
    children: list[dict[str, Any]],
    op: str,
    bought: list[int],
    seen: int,
    samples: list[float],
) -> None:
    """Rolling windows and relative dates: membership holds until next_change, and changes
    there (unless a template that moves in steps asked for a look at that instant)."""
    rule = parse_rule(root(*children, operator=op), NOW)
    person = user(
        {"seen": NOW + seen, "day": "2024-06-16", "age": 15},
    )
    events = [event_document("buy", NOW - b, {"price": 10}) for b in bought]
    before = member(rule, person, events, NOW)
    at = next_change(rule, person, events, NOW)
    end = at if at is not None else NOW + 3 * 365 * DAY
    for t in {NOW + 1, end - 1, *(NOW + int(f * (end - NOW)) for f in samples)} - {end}:
        assert member(rule, person, events, t) == before, (t, at)  # [NOW, end), as above
    stepped = any(c["uuid"] in ("s", "n") for c in children)
    if at is not None and not stepped:
        assert member(rule, person, events, at) != before


def test_the_tree_is_not_changed_by_parsing() -> None:
    tree = root(
        cond(), event("e", cond("x", path="$.price", type="number", operator=">", value="10"))
    )
    before = copy.deepcopy(tree)
    parse_rule(tree, NOW)
    assert tree == before


def test_counted_leaves_out_only_what_no_wrapper_can_count() -> None:
    """`counted`: an event outside the window (a rolling one only moves forward), outside a
    fixed period, or failing children that do not move with time is counted by no wrapper,
    now or later; one failing children that move with `now` may be counted later."""
    window = {"period": {"type": "rolling", "unit": "day", "value": 7}, "operator": ">=",
              "count": 1}  # fmt: skip
    pricey = cond("p", type="number", path="$.price", operator=">", value="10")
    old = cond("o", type="date", path="$.created_at", operator="<",
               value='{{subDate "now" 1 "days"}}')  # fmt: skip
    fixed = {"period": {"type": "fixed", "start_date": "2024-06-01T00:00:00Z",
                        "end_date": "2024-06-30T00:00:00Z"}, "operator": ">=", "count": 1}  # fmt: skip
    rule = parse_rule(
        root(
            event("a", pricey, value="buy", frequency=window),
            event("b", old, value="view"),
            event("c", value="open", frequency=fixed),
            operator="or",
        ),
        NOW,
    )
    counted = Evaluator(rule, NOW).counted
    start = NOW - 7 * DAY
    assert counted(event_document("buy", start, {"price": 11}))
    assert not counted(event_document("buy", start - 1, {"price": 11}))
    assert not counted(event_document("buy", NOW, {"price": 10}))
    assert not counted(event_document("other", NOW, {"price": 11}))
    assert counted(event_document("view", NOW, {}))  # not before yesterday yet: tomorrow it is
    assert counted(event_document("open", NOW, {}))
    assert not counted(event_document("open", parse_date("2024-07-01T00:00:00Z"), {}))
