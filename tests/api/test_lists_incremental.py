"""Dynamic lists kept current as data arrives (docs/lists.md), on every backend: every fixture
case replayed into a list created first, the list_entered / list_exited feed items, and a change
that races a backfill."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from api.test_lists import PRO, create, members, seed, settled
from api.test_lists_fixture import CASES, instant, replay
from api.test_lists_fixture import members as case_members
from conftest import Tenant, db_call
from pier import clock
from pier.domain.segments import dependencies, parse_rule

# Cases whose answer moves with time alone are evaluated when each user last changed: keeping
# them current without new data is the sweeper's work (not built yet, docs/lists.md)
TIMELESS = [c for c in CASES if not dependencies(parse_rule(c["rule"], 0)).time]


@pytest.mark.parametrize("case", TIMELESS, ids=[c["name"] for c in TIMELESS])
def test_fixture_case_incrementally(tenant: Tenant, case: dict[str, Any]) -> None:
    now = instant(case["now"])
    refs = {u["external_id"]: u["ref"] for u in case["users"]}
    first = min(instant(u["created_at"]) for u in case["users"]) - 1000
    with clock.frozen(first):
        r = create(tenant, {"name": "live", "type": "dynamic", "rule": case["rule"]})
        assert r.status_code == 201, r.text
        list_id = r.json()["id"]
        assert settled(tenant, list_id)["users_count"] == 0
        replay(tenant, case["users"], now)
    assert case_members(tenant, list_id, refs) == sorted(case["expect_members"])


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
    assert db_call(url, lambda s: s.finish_list(row, snapshot, at, mark, rule))
    assert members(tenant, row.id) == ["bob", "cat"]
    assert settled(tenant, row.id)["state"] == "draft"
