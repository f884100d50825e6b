"""Rule trees in words (domain/segments/words.py), on the contract's fixture trees: the portal's
Lists tab shows each list's rule this way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pier.domain.segments import parse_rule, path_words, rule_words

CASES = {
    c["name"]: c
    for c in json.loads(
        (Path(__file__).parent.parent / "fixtures" / "segment-rules.json").read_text()
    )
}
NOW = 1_700_000_000_000

EXPECTED = {
    "string = on the email column": "email is ann@example.com",
    "string not contain includes an unset email": "email does not contain @gmail.com",
    "string empty: empty text, null, missing and non-text values are empty (quirk fixed) (SQL engine)": "nickname is empty",
    "bracketed keys: a key with a space and a key containing a dot (quirk fixed) (SQL engine)": "['favorite color'] is blue, or ['a.b'] is x",
    "number comparison over [*] values of objects (quirk fixed) (SQL engine)": "orders[*].total is more than 100",
    "boolean = with the UI's empty value means is true (quirk fixed) (SQL engine)": "beta is true",
    "boolean = false matches false and absent flags (quirk fixed)": "beta is false",
    "date <= a date-only value compares with midnight UTC": "renewal is on or before 2024-01-31",
    "relative date: subDate now 30 days": 'last_seen is after {{subDate "now" 30 "days"}}',
    "nested three levels: or of and groups (quirk fixed) (SQL engine)": "(plan is pro, and age is at least 18), or (plan is free, and (country is FR, or beta is true))",
    "wrapper xor (older trees): exactly one child holds (quirk fixed)": "exactly one of (plan is pro; country is FR)",
    "an empty or-wrapper holds every user (quirk fixed)": "everyone",
    "event without frequency: at least one event with that exact name, ever": "did purchased",
    "event children combined with or, plus a user condition": "project is set, and did beat-game where (score.total is less than 5, or score.isRecord is true)",
    "event at least 3 times in a rolling 7 days, start inclusive": "did login at least 3 times in the last 7 days",
    "did not purchase in the last 14 days: count < 1 (quirk fixed) (SQL engine)": "email is set, and did purchase 0 times in the last 14 days",
    "event more than 2 times in a rolling year with a property condition": "did purchase more than 2 times in the last year where amount is at least 50",
    "fixed window honours start and end, both inclusive (quirk fixed)": "did webinar_attended at least once from 2024-05-01 to 2024-05-31 23:59:59 UTC",
    "fixed window without end_date": "did download at least 2 times since 2024-06-01",
    "rolling hour and minute windows": "did ping at least once in the last hour, or did alert at least 2 times in the last 30 minutes",
    "none wrapper over an event: never did it (quirk fixed)": "none of (did churned)",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_trees_in_words(name: str) -> None:
    assert rule_words(parse_rule(CASES[name]["rule"], NOW)) == EXPECTED[name]


def test_every_fixture_tree_has_words() -> None:
    """Every tree of the fixture file is written out, naming each event and no Python value."""
    for name, case in CASES.items():
        text = rule_words(parse_rule(case["rule"], NOW))
        assert text and "None" not in text, name
        for event in _event_names(case["rule"]):
            assert f"did {event}" in text, name


def _event_names(node: dict) -> list[str]:  # type: ignore[type-arg]
    own = [node["value"]] if node["type"] == "wrapper" and node["group"] == "event" else []
    return own + [n for child in node.get("children") or [] for n in _event_names(child)]


def test_the_briefs_example_and_quoted_values() -> None:
    tree = {"uuid": "r", "type": "wrapper", "group": "parent", "path": "$", "operator": "and",
            "children": [
                {"uuid": "a", "type": "string", "group": "user", "path": "$.plan", "operator": "=",
                 "value": "pro"},
                {"uuid": "b", "type": "wrapper", "group": "event", "path": "$.name",
                 "operator": "and", "value": "purchased",
                 "frequency": {"period": {"type": "rolling", "unit": "day", "value": 30},
                               "operator": ">=", "count": 3}},
                {"uuid": "c", "type": "string", "group": "user", "path": "$['x y'][0]",
                 "operator": "!=", "value": ""},
                {"uuid": "d", "type": "number", "group": "user", "path": "n", "operator": "<",
                 "value": 2.5},
                {"uuid": "e", "type": "wrapper", "group": "event", "path": "$.name",
                 "operator": "none", "value": "refunded", "children": [
                     {"uuid": "f", "type": "number", "group": "event", "path": "$.amount",
                      "operator": ">", "value": 10}]}]}  # fmt: skip
    assert rule_words(parse_rule(tree, NOW)) == (
        "plan is pro, and did purchased at least 3 times in the last 30 days, "
        """and ['x y'][0] is not "", and n is less than 2.5, """
        "and did refunded where none of (amount is more than 10)"
    )
    assert path_words(()) == "$"
