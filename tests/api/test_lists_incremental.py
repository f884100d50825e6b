"""Dynamic lists kept current as data arrives (docs/lists.md), on every backend: every fixture
case replayed into a list created first, the list_entered / list_exited feed items, and a change
that races a backfill."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from api.test_lists import BOUGHT, PRO, ROOT, create, members, seed, settled, tree
from api.test_lists_fixture import CASES, instant, replay
from api.test_lists_fixture import members as case_members
from conftest import Tenant, db_call
from pier import clock
from pier.domain.segments import Evaluator, Tally, parse_rule
from pier.store.common import SqlTx

DAY = 86_400_000
TWICE = tree({"uuid": "e", "type": "wrapper", "group": "event", "path": "$.name",
              "operator": "and", "value": "purchased",
              "frequency": {"period": {"type": "rolling", "unit": "day", "value": 30},
                            "operator": ">=", "count": 2}})  # fmt: skip
PRO_BUYERS = tree(PRO["children"][0], BOUGHT["children"][0])


def sweep(t: Tenant, now: int) -> int:
    """What the server's sweeper does every few seconds, at `now` (for every project)."""
    return db_call(t.server.database_url, lambda s: s.sweep_lists(now, 100_000))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fixture_case_incrementally(tenant: Tenant, case: dict[str, Any]) -> None:
    """Each user is evaluated when it changes (identified at its created_at, its events at the
    case's now); the memberships a change in time moves are due by then, and a sweep at `now`
    evaluates them."""
    now = instant(case["now"])
    refs = {u["external_id"]: u["ref"] for u in case["users"]}
    first = min(instant(u["created_at"]) for u in case["users"]) - 1000
    with clock.frozen(first):
        r = create(tenant, {"name": "live", "type": "dynamic", "rule": case["rule"]})
        assert r.status_code == 201, r.text
        list_id = r.json()["id"]
        assert settled(tenant, list_id)["users_count"] == 0
        replay(tenant, case["users"], now)
        sweep(tenant, now)
    assert case_members(tenant, list_id, refs) == sorted(case["expect_members"])


def test_a_window_lets_go_of_a_user_when_the_event_leaves_it(tenant: Tenant) -> None:
    rule = {**ROOT, "children": [{"uuid": "e", "root_uuid": "r", "parent_uuid": "r",
            "type": "wrapper", "group": "event", "path": "$.name", "operator": "and",
            "value": "purchased", "frequency": {"period": {"type": "rolling", "unit": "day",
            "value": 30}, "operator": ">=", "count": 1}}]}  # fmt: skip
    t0 = instant("2026-01-01T00:00:00Z")
    with clock.frozen(t0):
        list_id = create(tenant, {"name": "Buyers", "type": "dynamic", "rule": rule}).json()["id"]
        settled(tenant, list_id)
        seed(tenant)  # bob purchased at t0
        assert members(tenant, list_id) == ["bob"]
        left = t0 + 30 * DAY + 1  # the first instant the purchase is out of the window
        clock.set_frozen(left - 1)
        sweep(tenant, left - 1)
        assert members(tenant, list_id) == ["bob"]
        clock.set_frozen(left)
        sweep(tenant, left)
        assert members(tenant, list_id) == []
        assert feed(tenant)[-1] == ("list_exited", "bob", {"list_id": list_id, "name": "Buyers"})
        assert len(feed(tenant)) == 2  # entered, exited


def feed(t: Tenant) -> list[tuple[str, str, Any]]:
    r = t.secret.get("/api/client/events", params={"limit": 1000})
    return [
        (e["name"], e["external_id"], e["data"])
        for e in r.json()["results"]
        if e["name"].startswith("list_")
    ]


def test_entering_and_leaving_are_feed_items(tenant: Tenant) -> None:
    list_id = create(tenant, {"name": "Pro", "type": "dynamic", "rule": PRO}).json()["id"]
    settled(tenant, list_id)
    seed(tenant)
    data = {"list_id": list_id, "name": "Pro"}
    assert feed(tenant) == [("list_entered", "ann", data), ("list_entered", "cat", data)]
    assert (
        tenant.post("identify", {"external_id": "ann", "data": {"plan": "free"}}).status_code == 204
    )
    assert (
        tenant.post("identify", {"external_id": "bob", "data": {"plan": "pro"}}).status_code == 204
    )
    assert members(tenant, list_id) == ["bob", "cat"]
    assert feed(tenant)[2:] == [("list_exited", "ann", data), ("list_entered", "bob", data)]
    # events that no rule names change nothing
    assert tenant.post("events", [{"name": "viewed", "external_id": "bob"}]).status_code == 204
    assert len(feed(tenant)) == 4


def test_a_change_that_races_the_backfill_is_kept(tenant: Tenant) -> None:
    """The backfill's snapshot is taken, then a user changes (and the list is kept current in
    that change's transaction), then the backfill ends: the change is not undone."""
    seed(tenant)
    url = tenant.server.database_url

    async def start(store):  # type: ignore[no-untyped-def]
        row = await store.create_list(
            tenant.id, "Pro", "dynamic", msgspec.json.encode(PRO).decode(), clock.now_ms()
        )
        rule = parse_rule(PRO, clock.now_ms())
        assert await store.claim_list(row, "test", clock.now_ms(), 60_000)
        mark = await store.feed_mark(tenant.id)
        at = clock.now_ms()
        return row, rule, mark, at, await store.compute_members(tenant.id, rule, at)

    row, rule, mark, at, snapshot = db_call(url, start)
    assert len(snapshot) == 2  # ann and cat
    # meanwhile: ann leaves, bob joins (the loading list is kept current as they change)
    assert (
        tenant.post("identify", {"external_id": "ann", "data": {"plan": "free"}}).status_code == 204
    )
    assert (
        tenant.post("identify", {"external_id": "bob", "data": {"plan": "pro"}}).status_code == 204
    )
    assert db_call(url, lambda s: s.finish_list(row, snapshot, at, mark, rule, "test"))
    assert members(tenant, row.id) == ["bob", "cat"]
    assert settled(tenant, row.id)["state"] == "draft"


def test_a_merged_users_list_items_leave_with_it(tenant: Tenant) -> None:
    """Both users entered the list; after the merge the survivor has entered it once (the
    merged user's list_entered left the feed with its other own items)."""
    list_id = create(tenant, {"name": "All", "type": "dynamic", "rule": ROOT}).json()["id"]
    settled(tenant, list_id)
    assert tenant.post("identify", {"external_id": "b"}).status_code == 204
    assert tenant.post("identify", {"anonymous_id": "a"}).status_code == 204
    assert tenant.post("alias", {"anonymous_id": "a", "external_id": "b"}).status_code == 204
    items = tenant.secret.get("/api/client/events", params={"limit": 1000}).json()["results"]
    listed = [(i["name"], i["external_id"]) for i in items if i["name"].startswith("list_")]
    assert listed == [("list_entered", "b")]
    assert settled(tenant, list_id)["users_count"] == 1


def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The external ids of the users the (in-process) server evaluates a rule for over their
    events, from now (not over a tally: the lists' cache on SQLite, which reads no events)."""
    seen: list[str] = []
    member = Evaluator.member

    def counted(self: Evaluator, user: Any, events: Any) -> bool:
        if not isinstance(events, Tally):
            seen.append(user["external_id"])
        return member(self, user, events)

    monkeypatch.setattr(Evaluator, "member", counted)
    return seen


def test_new_events_that_cannot_move_a_membership_are_not_evaluated(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member of "purchased at least twice" stays one with more purchases, and a user whose
    plan is not pro stays out of "pro and purchased" whatever it buys: neither is evaluated
    (nor are its events read); the others are, and the lists stay exact."""
    seed(tenant)  # ann and cat are pro, bob is free and purchased once
    twice = create(tenant, {"name": "Twice", "type": "dynamic", "rule": TWICE}).json()["id"]
    pro = create(tenant, {"name": "Pro buyers", "type": "dynamic", "rule": PRO_BUYERS}).json()
    settled(tenant, twice), settled(tenant, pro["id"])
    buy = [{"name": "purchased", "external_id": "bob"}]
    assert tenant.post("events", buy).status_code == 204
    assert members(tenant, twice) == ["bob"] and members(tenant, pro["id"]) == []
    seen = evaluations(monkeypatch)
    for _ in range(3):
        assert tenant.post("events", buy).status_code == 204
    assert seen == []
    assert tenant.post("events", [{"name": "purchased", "external_id": "ann"}]).status_code == 204
    # not yet twice; pro, and now a buyer: evaluated, from her events on PostgreSQL, from the
    # tally the backfill started the lists' cache with on SQLite (no events read)
    cached = tenant.server.database_url.startswith("sqlite")
    assert sorted(seen) == ([] if cached else ["ann", "ann"])
    assert members(tenant, twice) == ["bob"] and members(tenant, pro["id"]) == ["ann"]


def test_a_membership_past_its_due_instant_is_evaluated_with_new_events(
    tenant: Tenant,
) -> None:
    """bob's first purchase has left the window and the sweeper has not looked yet: an old
    purchase (outside the window) must not keep bob in the list on the strength of it being
    "more events" (the membership noted is no longer known to hold)."""
    t0 = instant("2026-01-01T00:00:00Z")
    with clock.frozen(t0):
        list_id = create(tenant, {"name": "Twice", "type": "dynamic", "rule": TWICE}).json()["id"]
        settled(tenant, list_id)
        for at in (t0, t0 + 3_600_000):
            event = {"name": "purchased", "external_id": "bob", "timestamp": at}
            assert tenant.post("events", [event]).status_code == 204
        assert members(tenant, list_id) == ["bob"]
        clock.set_frozen(t0 + 30 * DAY + 1)  # no sweep
        event = {"name": "purchased", "external_id": "bob", "timestamp": t0 - 40 * DAY}
        assert tenant.post("events", [event]).status_code == 204
        assert members(tenant, list_id) == []


def test_events_no_rule_counts_are_not_evaluated(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ann is out of "purchased over 10 at least twice in 30 days": a purchase of 5, or one of
    40 days ago, is counted by no wrapper, now or later, so ann is not evaluated; a purchase
    of 20 is, and ann enters with the second."""
    over_10 = {"uuid": "p", "type": "number", "group": "event", "path": "$.price",
               "operator": ">", "value": "10"}  # fmt: skip
    rule = tree({**TWICE["children"][0], "children": [over_10]})
    t0 = instant("2026-01-01T00:00:00Z")
    with clock.frozen(t0):
        seed(tenant)
        list_id = create(tenant, {"name": "Big", "type": "dynamic", "rule": rule}).json()["id"]
        settled(tenant, list_id)
        seen = evaluations(monkeypatch)
        old = t0 - 40 * DAY
        for event in ({"data": {"price": 5}}, {"data": {"price": 50}, "timestamp": old}):
            event |= {"name": "purchased", "external_id": "ann"}
            assert tenant.post("events", [event]).status_code == 204
        assert seen == [] and members(tenant, list_id) == []
        for _ in range(2):
            event = {"name": "purchased", "external_id": "ann", "data": {"price": 20}}
            assert tenant.post("events", [event]).status_code == 204
        assert set(seen) == {"ann"} and members(tenant, list_id) == ["ann"]  # (2nd: its tally)


def test_a_user_the_batch_creates_is_evaluated_without_reading(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dan's first request creates it: its document and events are the batch's, so neither is
    read back (and it is in no list yet); it enters "purchased at least twice" all the same."""
    seed(tenant)
    list_id = create(tenant, {"name": "Twice", "type": "dynamic", "rule": TWICE}).json()["id"]
    settled(tenant, list_id)
    read: list[str] = []
    user_documents, add_events = SqlTx.user_documents, SqlTx.add_events

    async def documents(self: SqlTx, project_id: int, user_ids: list[int]) -> Any:
        docs = await user_documents(self, project_id, user_ids)
        read.extend(doc["external_id"] for doc, _ in docs.values())
        return docs

    async def events(self: SqlTx, docs: Any, user_ids: list[int], names: set[str]) -> None:
        read.extend(docs[u][0]["external_id"] for u in user_ids if u in docs)
        await add_events(self, docs, user_ids, names)

    monkeypatch.setattr(SqlTx, "user_documents", documents)
    monkeypatch.setattr(SqlTx, "add_events", events)
    buy = {"name": "purchased", "external_id": "dan"}
    assert tenant.post("events", [buy, buy]).status_code == 204
    assert "dan" not in read and members(tenant, list_id) == ["dan"]
    assert tenant.post("events", [{"name": "purchased", "external_id": "bob"}]).status_code == 204
    assert members(tenant, list_id) == ["bob", "dan"]  # (bob: read, or its tally on SQLite)
