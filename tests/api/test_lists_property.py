"""Property: after any sequence of changes (identify, alias, events, deletes) and clock moves,
a dynamic list kept current incrementally (and by the sweeper) holds exactly the users a
from-scratch evaluation at that instant finds (the preview's query), on every backend."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.test_lists import ROOT, create, settled
from api.test_lists_fixture import instant
from api.test_lists_incremental import sweep
from conftest import LiveServer, make_tenant
from pier import clock

RULE = {**ROOT, "operator": "or", "children": [
    {"uuid": "p", "root_uuid": "r", "parent_uuid": "r", "type": "string", "group": "user",
     "path": "$.plan", "operator": "=", "value": "pro"},
    {"uuid": "e", "root_uuid": "r", "parent_uuid": "r", "type": "wrapper", "group": "event",
     "path": "$.name", "operator": "and", "value": "purchased",
     "frequency": {"period": {"type": "rolling", "unit": "day", "value": 7},
                   "operator": ">=", "count": 2},
     "children": [{"uuid": "c", "root_uuid": "r", "parent_uuid": "e", "type": "number",
                   "group": "event", "path": "$.price", "operator": ">", "value": "10"}]},
    {"uuid": "d", "root_uuid": "r", "parent_uuid": "r", "type": "date", "group": "user",
     "path": "$.trial_ends", "operator": ">", "value": "{{now}}"},
]}  # fmt: skip
# without the `now` template: rules the lists' cache keeps a tally for (store/list_cache.py),
# one whose count can only add members, one whose count can take them out ("fewer than 2")
RISING = {**RULE, "children": RULE["children"][:2]}
FALLING = {**ROOT, "operator": "and", "children": [
    RULE["children"][0],
    {**RULE["children"][1], "frequency": {**RULE["children"][1]["frequency"], "operator": "<"}},
]}  # fmt: skip
RULES = (RULE, RISING, FALLING)
HOUR = 3_600_000
PEOPLE = ["a", "b", "c"]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("identify"), st.sampled_from(PEOPLE),
                  st.sampled_from(["pro", "free", None]), st.integers(-48, 48)),
        st.tuples(st.just("buy"), st.sampled_from(PEOPLE), st.booleans(),
                  st.sampled_from([5, 20]), st.integers(0, 200)),
        st.tuples(st.just("anonymous"), st.sampled_from(PEOPLE), st.sampled_from(["pro", "free"])),
        st.tuples(st.just("alias"), st.sampled_from(PEOPLE), st.sampled_from(PEOPLE)),
        st.tuples(st.just("delete"), st.sampled_from(PEOPLE)),
        st.tuples(st.just("wait"), st.integers(1, 200)),
    ),
    max_size=12,
)  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(sequence=steps)
def test_incremental_membership_equals_a_fresh_evaluation(
    server: LiveServer, sequence: list[tuple[Any, ...]]
) -> None:
    t = make_tenant(server)
    now = instant("2026-03-01T00:00:00Z")
    with clock.frozen(now):
        ids = [create(t, {"name": f"l{i}", "type": "dynamic", "rule": r}).json()["id"]
               for i, r in enumerate(RULES)]  # fmt: skip
        for list_id in ids:
            settled(t, list_id)
        for step in sequence:
            kind = step[0]
            if kind == "identify":
                _, who, plan, hours = step
                data = {"plan": plan, "trial_ends": clock.now_ms() + hours * HOUR}
                r = t.post("identify", {"external_id": who, "data": data})
            elif kind == "buy":
                _, who, anonymous, price, hours_ago = step
                at = clock.now_ms() - hours_ago * HOUR
                by = {"anonymous_id": f"anon-{who}"} if anonymous else {"external_id": who}
                event = {"name": "purchased", **by, "data": {"price": price}, "timestamp": at}
                r = t.post("events", [event])
            elif kind == "anonymous":  # a user known by an anonymous id only, until aliased
                _, anon, plan = step
                r = t.post("identify", {"anonymous_id": f"anon-{anon}", "data": {"plan": plan}})
            elif kind == "alias":  # merges the anonymous user into the known one, if both exist
                _, anon, who = step
                r = t.post("alias", {"anonymous_id": f"anon-{anon}", "external_id": who})
                assert r.status_code in (204, 422), r.text  # 422: aliased to another already
                continue
            elif kind == "delete":
                r = t.secret.delete(f"/api/client/users/{step[1]}")
                assert r.status_code in (204, 404), r.text
                continue
            else:
                clock.set_frozen(clock.now_ms() + step[1] * HOUR)
                sweep(t, clock.now_ms())
                continue
            assert r.status_code == 204, r.text
        sweep(t, clock.now_ms())
        for rule, list_id in zip(RULES, ids, strict=True):
            fresh = t.secret.post("/api/client/lists/preview", json={"rule": rule}).json()
            path = f"/api/client/lists/{list_id}/users"
            got = t.secret.get(path, params={"limit": 1000}).json()["results"]
            assert sorted(u["id"] for u in got) == sorted(u["id"] for u in fresh["sample"]), rule
    t.public.close()
    t.secret.close()
