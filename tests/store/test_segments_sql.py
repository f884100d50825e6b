"""The SQL form of a rule (store/segments_sql.py) gives the in-memory evaluator's answer
(domain/segments) on SQLite and PostgreSQL: every case of the contract's fixture file, and
random trees over random users and events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

from pier.domain.segments import (
    Evaluator,
    RuleError,
    dependencies,
    event_document,
    parse_rule,
    user_document,
)
from pier.domain.segments.values import parse_date
from pier.store import make_store
from pier.store.base import Start, Tallies
from pier.store.common import SqlStore
from support.postgres import PostgresServer
from support.segment_trees import DAY, NOW, OPERATORS, SCALARS, TREES, USERS, VALUES

# the random trees' examples (over a real database: fewer than the domain's own tests)
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIXTURE = Path(__file__).parent.parent / "fixtures" / "segment-rules.json"
CASES = json.loads(FIXTURE.read_text())
_json = msgspec.json.Encoder()


def instant(value: str | int) -> int:
    """An instant of the fixture (ISO text) or of the strategies (ms)."""
    return value if isinstance(value, int) else parse_date(value)


class Db:
    """A migrated store on a loop of its own, and fresh projects loaded with users/events."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.store: SqlStore = make_store(url)  # type: ignore[assignment]
        self.run(self.store.open())
        self.run(self.store.migrate())
        self.next_id = 1

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()

    def load(self, users: list[dict[str, Any]]) -> tuple[int, dict[int, str]]:
        """A new project holding the users (fixture shape) and their events: (project id,
        {user id: ref})."""

        async def main() -> tuple[int, dict[int, str]]:
            store = self.store
            pid = (await store.create_project("segments", 0)).id
            refs: dict[int, str] = {}
            async with store.writing() as run:
                for u in users:
                    uid, self.next_id = self.next_id, self.next_id + 1
                    refs[uid] = u["ref"]
                    created = instant(u["created_at"])
                    await run.execute(
                        store.q.insert_user,
                        uid,
                        pid,
                        u["external_id"],
                        u["email"],
                        u["phone"],
                        u["timezone"],
                        u["locale"],
                        u.get("raw") or _json.encode(u["data"]).decode(),
                        created,
                        created,
                    )
                    for e in u["events"]:
                        at = instant(e["created_at"])
                        data = _json.encode(e["data"]).decode()
                        await run.execute(
                            store.q.insert_events, pid, uid, e["name"], data, at, at, None
                        )
            return pid, refs

        return self.run(main())

    def members(
        self, pid: int, refs: dict[int, str], rule: Any, now: int, among: list[int] | None = None
    ) -> list[str]:
        ids = self.run(self.store.segment_members(pid, rule, now, among))
        return sorted(refs[i] for i in ids)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('segments')}/pier.db"
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create_database()
    db = Db(url)
    yield db
    db.close()


def in_memory(rule: Any, users: list[dict[str, Any]], now: int) -> list[str]:
    evaluator = Evaluator(rule, now)
    return sorted(u["ref"] for u in users if evaluator.member(*documents(u)))


def documents(u: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    user = user_document(
        u["data"],
        external_id=u["external_id"],
        email=u["email"],
        phone=u["phone"],
        timezone=u["timezone"],
        locale=u["locale"],
        created_at=instant(u["created_at"]),
    )
    events = [event_document(e["name"], instant(e["created_at"]), e["data"]) for e in u["events"]]
    return user, events


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fixture_case_in_memory(case: dict[str, Any]) -> None:
    now = parse_date(case["now"])
    rule = parse_rule(case["rule"], now)
    assert in_memory(rule, case["users"], now) == sorted(case["expect_members"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fixture_case_in_sql(db: Db, case: dict[str, Any]) -> None:
    now = parse_date(case["now"])
    rule = parse_rule(case["rule"], now)
    pid, refs = db.load(case["users"])
    assert db.members(pid, refs, rule, now) == sorted(case["expect_members"])
    # the same query for some users only (as incremental updates may ask)
    among = list(refs)[::2]
    expected = sorted(set(case["expect_members"]) & {refs[i] for i in among})
    assert db.members(pid, refs, rule, now, among) == expected
    # in chunks of user ids, as a backfill asks (each chunk's events only)
    ids = sorted(refs)
    bounds = [ids[0] - 1, *ids[1::2], None]
    chunked = []
    for after, upto in zip(bounds, bounds[1:], strict=False):
        found = db.run(db.store.segment_members(pid, rule, now, ids=(after, upto)))  # type: ignore[arg-type]
        assert all(after < i and (upto is None or i <= upto) for i in found)
        chunked += found
    assert sorted(refs[i] for i in chunked) == sorted(case["expect_members"])


def test_random_trees_give_the_in_memory_answer(db: Db) -> None:
    """Random trees over random users and events: the SQL members are the in-memory ones."""

    @EXAMPLES
    @given(tree=TREES, users=USERS)
    def check(tree: dict[str, Any], users: list[dict[str, Any]]) -> None:
        rule = parse_rule(tree, NOW)
        pid, refs = db.load(users)
        assert db.members(pid, refs, rule, NOW) == in_memory(rule, users, NOW), tree

    check()


KINDS_OF_VALUE: list[Any] = [
    *SCALARS.elements,  # type: ignore[attr-defined]
    [],
    ["vip"],
    ["vip", "beta"],
    [2, " 5 ", True, None],
    [{"x": 1}],
    {"x": "vip", "y": 10},
    {},
    "1e+21",
    " 1e3\t",
    "-0",
    "1.5e-7",
    "2024-06-15",
    "2024-06-15T23:59:59.999Z",
    1718409600000,
]


def test_every_operator_on_every_kind_of_value(db: Db) -> None:
    """One user per kind of value (at $.a, as the only element of $.l, and as a column), and
    every type, operator and rule value of the strategies: the same members both ways."""
    users = [
        {
            "ref": f"v{i}",
            "external_id": f"x{i}",
            "email": value if isinstance(value, str) else None,
            "phone": None,
            "timezone": None,
            "locale": None,
            "created_at": NOW - i * 3_600_000,
            "data": {"a": value, "l": [value]},
            "events": [],
        }
        for i, value in enumerate([*KINDS_OF_VALUE, None])
    ]
    users.append({**users[-1], "ref": "none", "external_id": "none", "data": {}})
    pid, refs = db.load(users)
    checked = 0
    for kind, operators in OPERATORS.items():
        for op in operators:
            for value in VALUES[kind]:
                for path in ("$.a", "$.l[*]", "$[*]", "$.email", "$.created_at"):
                    tree = {"uuid": "c", "type": kind, "group": "user", "path": path}
                    rule = parse_rule(tree | {"operator": op, "value": value}, NOW)
                    sql = db.members(pid, refs, rule, NOW)
                    assert sql == in_memory(rule, users, NOW), (kind, op, value, path)
                    checked += 1
    assert checked == 5 * sum(len(VALUES[k]) * len(ops) for k, ops in OPERATORS.items())


def test_event_periods_and_counts_at_their_bounds(db: Db) -> None:
    """Events at each window's start, 1 ms either side, and counts of 0 to 3."""
    lengths = [60_000, 3_600_000, DAY, 7 * DAY, 30 * DAY, 365 * DAY]
    instants = sorted({NOW + d for n in lengths for d in (-n - 1, -n, -n + 1)} | {NOW, NOW + DAY})
    start, end = parse_date("2024-06-08T12:00:00.250Z"), parse_date("2024-06-14T12:00:00.250Z")
    instants += [start - 1, start, end, end + 1]
    users = [
        {
            "ref": f"u{i}",
            "external_id": f"x{i}",
            "email": None,
            "phone": None,
            "timezone": None,
            "locale": None,
            "created_at": NOW,
            "data": {},
            "events": [{"name": "buy", "data": {}, "created_at": at} for at in chosen],
        }
        for i, chosen in enumerate([[], *([at] for at in instants), instants[-6:], instants[:3]])
    ]
    pid, refs = db.load(users)
    periods: list[dict[str, Any]] = [
        {"type": "rolling", "unit": unit, "value": value}
        for unit in ("minute", "hour", "day", "week", "month", "year")
        for value in (1, 7)
    ]
    periods += [
        {"type": "fixed", "start_date": "2024-06-08T12:00:00.250Z"},
        {
            "type": "fixed",
            "start_date": "2024-06-08T12:00:00.250Z",
            "end_date": "2024-06-14T12:00:00.250Z",
        },
    ]
    for period in periods:
        for op in ("=", "<", "<=", ">", ">="):
            for count in range(4):
                frequency = {"period": period, "operator": op, "count": count}
                tree = {"uuid": "e", "type": "wrapper", "group": "event", "path": "$.name"}
                tree |= {"operator": "and", "value": "buy", "frequency": frequency}
                rule = parse_rule(tree, NOW)
                sql = db.members(pid, refs, rule, NOW)
                assert sql == in_memory(rule, users, NOW), frequency


ODD_KEYS = ['q"k', "b\\s", "café", "a.b", "x y", "", "0", "*", "it's", "$"]


def test_keys_of_any_spelling(db: Db) -> None:
    """Bracketed keys with quotes, backslashes, dots, spaces, other scripts, or none at all,
    at the top and nested: each finds its own value only."""
    users = [
        {
            "ref": f"k{i}",
            "external_id": f"k{i}",
            "email": None,
            "phone": None,
            "timezone": None,
            "locale": None,
            "created_at": NOW,
            "data": {key: "v", "o": {key: "w"}},
            "events": [],
        }
        for i, key in enumerate(ODD_KEYS)
    ]
    pid, refs = db.load(users)
    for i, key in enumerate(ODD_KEYS):
        quoted = "'" + key.replace("\\", "\\\\").replace("'", "\\'") + "'"
        for path, value in ((f"$[{quoted}]", "v"), (f"$.o[{quoted}]", "w")):
            tree = {"uuid": "c", "type": "string", "group": "user", "path": path}
            rule = parse_rule(tree | {"operator": "=", "value": value}, NOW)
            assert db.members(pid, refs, rule, NOW) == [f"k{i}"], path


def test_keys_the_client_wrote_with_escapes(db: Db) -> None:
    """Data is stored as the client wrote it: keys escaped as PHP (`\\/`) or Python
    (`\\u00e9`) write them are found by their plain spelling."""
    raw = '{"a\\/b": "v", "caf\\u00e9": "v", "o": {"x\\/y": "v"}}'
    user = {
        "ref": "raw",
        "external_id": "raw",
        "email": None,
        "phone": None,
        "timezone": None,
        "locale": None,
        "created_at": NOW,
        "data": msgspec.json.decode(raw),
        "raw": raw,
        "events": [],
    }
    assert set(user["data"]) == {"a/b", "café", "o"}
    pid, refs = db.load([user])
    for path in ("$['a/b']", "$['café']", "$.café", "$.o['x/y']"):
        tree = {"uuid": "c", "type": "string", "group": "user", "path": path, "operator": "="}
        rule = parse_rule(tree | {"value": "v"}, NOW)
        assert db.members(pid, refs, rule, NOW) == ["raw"], path


def _outcome(decide: Any, *args: Any) -> Any:
    """What it answers, None when it raises RuleError (as the store notes it: unknown)."""
    try:
        return decide(*args)
    except RuleError:
        return None


def test_the_sql_tallies_are_the_in_memory_ones(tmp_path: Path) -> None:
    """Random trees that can be tallied, over random users and events: the tallies a backfill
    gives the lists' cache (SQLite's compute_tallies, by chunk) are Evaluator.tally's, and for
    a rule that reads the user, every user's known and facts are Evaluator's."""
    db = Db(f"sqlite:///{tmp_path}/pier.db")

    @EXAMPLES
    @given(tree=TREES, users=USERS)
    def check(tree: dict[str, Any], users: list[dict[str, Any]]) -> None:
        rule = parse_rule(tree, NOW)
        deps = dependencies(rule)
        pid, refs = db.load(users)
        hits: Tallies = {}
        ids = sorted(refs)
        bounds = [ids[0] - 1, ids[len(ids) // 2], None] if ids else [0, None]
        for after, upto in zip(bounds, bounds[1:], strict=False):
            found = db.run(db.store.compute_tallies(pid, rule, NOW, (after, upto)))
            if not (deps.tallied and deps.events):
                assert found is None
                return
            hits.update(found)
        evaluator = Evaluator(rule, NOW)
        by_ref = {u["ref"]: u for u in users}
        reads = deps.profile_keys != frozenset()
        for uid, ref in refs.items():
            person, events = documents(by_ref[ref])
            start = hits.get(uid, Start([]))
            got = evaluator.add(evaluator.tally(()), start.hits)
            assert got == evaluator.tally(events), (tree, ref)
            if reads:  # what the user's document says comes with it (every user has a Start)
                assert uid in hits
                assert start.known == _outcome(evaluator.known, person), (tree, ref)
                assert start.facts == _outcome(evaluator.facts, person), (tree, ref)

    try:
        check()
    finally:
        db.close()
