"""The complete change feed (docs/client-api.md, "The change feed"), over HTTP on both backends:
every accepted change is an item of GET /api/client/events, a request that changes nothing adds
none, a deleted user leaves only its tombstone, Pier's item names are refused for client events,
and the items alone rebuild the users and devices the read API shows."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import pytest

from conftest import Tenant
from pier.api.openapi import document
from support.feed import PROFILE, rebuild, without_nulls

FIELDS = {"os": "iOS", "model": "iPhone15,2", "app_build": "1", "app_version": "1.0"}


def items(tenant: Tenant, after: str | None = None) -> tuple[list[dict], str | None]:
    """Every item after the cursor `after`, and the cursor to continue from."""
    out: list[dict] = []
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"after": after} if after else {})}
        r = tenant.secret.get("/api/client/events", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        out += page["results"]
        after = page["next_cursor"]
        if not page["has_more"]:
            return out, after


def post(tenant: Tenant, path: str, body: object) -> None:
    r = tenant.post(path, body)
    assert r.status_code == 204, (path, body, r.text)


def device(device_id: str, token: str | None = None, **ids: str) -> dict:
    return {**ids, "device_id": device_id, "token": token, **FIELDS}


def named(found: list[dict], name: str) -> list[dict]:
    return [e for e in found if e["name"] == name]


# -- each item ----------------------------------------------------------------------------------
def test_a_new_user_is_user_created_then_its_whole_state(tenant: Tenant) -> None:
    post(tenant, "identify", {"external_id": "e1", "email": "e@x.io", "phone": "+14155552671"})
    found, _ = items(tenant)
    assert [e["name"] for e in found] == ["user_created", "user_updated"]
    uid = tenant.user("e1")["id"]
    assert {e["user_id"] for e in found} == {uid}
    assert found[1]["data"] == {
        "external_id": "e1",
        "anonymous_ids_added": [tenant.user("e1")["anonymous_id"]],  # generated: said here
        "email": "e@x.io",
        "phone": "+14155552671",
        "data": {"phone_country": "US", "phone_is_valid": True},
    }


def test_user_updated_holds_only_what_changed(tenant: Tenant) -> None:
    post(tenant, "identify", {"external_id": "e1", "phone": "+14155552671", "data": {"a": 1}})
    _, cursor = items(tenant)
    post(tenant, "identify", {"external_id": "e1", "phone": None, "data": {"a": 1, "b": [2]}})
    post(tenant, "alias", {"anonymous_id": "a2", "external_id": "e1"})
    post(tenant, "events", [{"name": "x", "external_id": "e1", "user": {"locale": "fr"}}])
    found, _ = items(tenant, cursor)
    assert [(e["name"], e["data"]) for e in found] == [
        # phone cleared: its keys removed (null)
        (
            "user_updated",
            {"phone": None, "data": {"b": [2], "phone_country": None, "phone_is_valid": None}},
        ),
        ("user_updated", {"anonymous_ids_added": ["a2"]}),
        ("user_updated", {"locale": "fr"}),  # an event's user block, before the event
        ("x", {}),
    ]


def test_alias_of_an_anonymous_user_sets_its_external_id(tenant: Tenant) -> None:
    post(tenant, "identify", {"anonymous_id": "a1"})
    _, cursor = items(tenant)
    post(tenant, "alias", {"anonymous_id": "a1", "external_id": "e1"})
    found, _ = items(tenant, cursor)
    assert [(e["name"], e["data"]) for e in found] == [("user_updated", {"external_id": "e1"})]


def test_a_merge_drops_the_merged_users_items_and_says_what_the_survivor_gained(
    tenant: Tenant,
) -> None:
    post(tenant, "identify", {"anonymous_id": "a1", "email": "a@x.io", "data": {"k": "a", "j": 1}})
    post(tenant, "devices", device("d1", "tok-1", anonymous_id="a1"))
    post(tenant, "events", [{"name": "browsed", "anonymous_id": "a1"}])
    post(tenant, "identify", {"external_id": "e1", "data": {"k": "e"}})
    merged_id = tenant.user("a1", by="anonymous_id")["id"]
    before, cursor = items(tenant)
    assert [e["name"] for e in named(before, "device_registered")] == ["device_registered"]

    post(tenant, "alias", {"anonymous_id": "a1", "external_id": "e1"})
    e1 = tenant.user("e1")
    new, _ = items(tenant, cursor)
    assert [(e["name"], e["user_id"], e["data"]) for e in new] == [
        ("user_merged", e1["id"], {"merged_user_id": merged_id, "anonymous_ids": ["a1"]}),
        (
            "user_updated",
            e1["id"],
            {"anonymous_ids_added": ["a1"], "email": "a@x.io", "data": {"j": 1}},
        ),
        ("device_registered", e1["id"], {**device("d1", "tok-1"), "os_version": None, "extra": {}}),
    ]
    # a1's own items left the feed; its tracked event moved to E
    now, _ = items(tenant)
    assert merged_id not in {e["user_id"] for e in now}
    assert [e["user_id"] for e in named(now, "browsed")] == [e1["id"]]


def test_device_registered_is_the_device_as_stored(tenant: Tenant) -> None:
    post(tenant, "identify", {"external_id": "e1"})
    post(tenant, "identify", {"external_id": "e2"})
    _, cursor = items(tenant)
    post(tenant, "devices", {**device("d1", "t1", external_id="e1"), "os_version": "17", "x": 1})
    post(tenant, "devices", {**device("d1", external_id="e1"), "y": 2})  # token: null clears
    post(tenant, "devices", device("d2", "t2", external_id="e1"))
    post(tenant, "devices", device("d3", None, external_id="e2"))
    post(tenant, "devices", device("d3", "t2", external_id="e2"))  # t2 moves from d2 to d3
    post(tenant, "devices", device("d9", "t2", external_id="e1"))  # d3, found by its token:
    found, _ = items(tenant, cursor)  # renamed d9, and moved to e1 (the token's latest user)
    e1, e2 = tenant.user("e1")["id"], tenant.user("e2")["id"]
    base = {"os_version": None, "extra": {}}
    assert [(e["name"], e["user_id"], e["data"]) for e in found] == [
        ("device_registered", e1, {**device("d1", "t1"), "os_version": "17", "extra": {"x": 1}}),
        (
            "device_registered",
            e1,
            {**device("d1", None), "os_version": "17", "extra": {"x": 1, "y": 2}},
        ),
        ("device_registered", e1, {**device("d2", "t2"), **base}),
        ("device_registered", e2, {**device("d3", None), **base}),
        ("device_registered", e1, {**device("d2", None), **base}),  # lost its token first
        ("device_registered", e2, {**device("d3", "t2"), **base}),
        # renamed and moved: its former id goes, under the user the feed showed it with
        ("device_removed", e2, {"device_id": "d3", "reason": "renamed"}),
        ("device_registered", e1, {**device("d9", "t2"), **base}),
    ]
    devices = tenant.secret.get("/api/client/users/e1/devices").json()["results"]
    assert sorted(d["device_id"] for d in devices) == ["d1", "d2", "d9"]


def test_a_request_that_changes_nothing_adds_no_item(tenant: Tenant) -> None:
    requests: list[tuple[str, object]] = [
        ("identify", {"anonymous_id": "a1", "external_id": "e1", "email": "e@x.io"}),
        ("identify", {"external_id": "e1", "data": {"k": [1, {"n": None}]}, "locale": "en"}),
        ("alias", {"anonymous_id": "a2", "external_id": "e1"}),
        ("devices", {**device("d1", "t1", external_id="e1"), "extra_key": "v"}),
        ("events", [{"name": "x", "external_id": "e1", "user": {"locale": "de"}}]),
    ]
    cursor = None
    for path, body in requests:
        post(tenant, path, body)
        first, cursor = items(tenant, cursor)
        assert {"user_updated", "device_registered"} & {e["name"] for e in first}, path
        post(tenant, path, body)  # the same again
        found, cursor = items(tenant, cursor)
        assert [e["name"] for e in found] == (["x"] if path == "events" else []), path


# -- deletion ----------------------------------------------------------------------------------
def test_a_deleted_users_items_leave_the_feed_and_its_tombstone_stays(tenant: Tenant) -> None:
    post(tenant, "identify", {"external_id": "gone", "anonymous_id": "g1", "data": {"k": 1}})
    post(tenant, "identify", {"anonymous_id": "g2"})
    post(tenant, "alias", {"anonymous_id": "g2", "external_id": "gone"})  # a merge
    post(tenant, "devices", device("d1", "t1", external_id="gone"))
    post(tenant, "events", [{"name": "bought", "external_id": "gone"}])
    post(tenant, "events", [{"name": "kept", "external_id": "other"}])
    uid = tenant.user("gone")["id"]
    before, _ = items(tenant)

    assert tenant.secret.delete("/api/client/users/gone").status_code == 204
    after, _ = items(tenant)
    assert [e for e in after if e["name"] != "user_deleted"] == [
        e for e in before if e["user_id"] != uid
    ]
    [tombstone] = named(after, "user_deleted")
    assert tombstone["user_id"] == uid and tombstone["id"] > before[-1]["id"]
    assert tombstone["data"] == {
        "external_id": "gone",
        "anonymous_ids": ["g1", "g2"],
        "device_ids": ["d1"],
    }
    assert "g1" not in str([e["data"] for e in after if e is not tombstone])


# -- reserved names --------------------------------------------------------------------------------
RESERVED = [
    "user_created",
    "user_updated",
    "user_merged",
    "device_registered",
    "device_removed",
    "user_deleted",
    "list_entered",
    "list_exited",
]


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_names_are_refused_on_every_route_that_takes_events(
    tenant: Tenant, name: str
) -> None:
    before = tenant.counts()
    routes: list[tuple[str, object, str]] = [
        (
            "events",
            [{"name": "ok", "external_id": "e1"}, {"name": name, "external_id": "e1"}],
            "/1/name",
        ),
        ("events", [{"name": name, "anonymous_id": "a", "user": {"email": "x@y.z"}}], "/0/name"),
        ("track", {"event": name, "external_id": "e1"}, "/event"),
        (
            "segment",
            {"batch": [{"type": "track", "userId": "e1", "event": name}]},
            "/batch/0/event",
        ),
        ("segment/v1/track", {"userId": "e1", "event": name}, "/event"),
    ]
    for path, body, pointer in routes:
        r = tenant.post(path, body)
        assert r.status_code == 422, (path, r.text)
        assert [p["path"] for p in r.json()["errors"]] == [pointer], path
        assert "reserved" in r.json()["errors"][0]["message"]
    assert tenant.counts() == before  # nothing stored
    post(tenant, "events", [{"name": name.upper(), "external_id": "e1"}])  # only these names


# -- rebuilding from the feed ---------------------------------------------------------------------
def read_state(tenant: Tenant) -> tuple[dict[int, dict], dict[str, dict]]:
    """Users and devices as the read API shows them, in rebuild()'s shape."""
    r = tenant.secret.get("/api/client/users", params={"limit": 1000})
    assert r.status_code == 200 and r.json()["next_cursor"] is None
    users, devices = {}, {}
    for u in r.json()["results"]:
        users[u["id"]] = {
            **{k: u[k] for k in PROFILE},
            "anonymous_ids": u["anonymous_ids"],
            "data": without_nulls(u["data"]),
        }
        for d in u["devices"]:
            devices[d["device_id"]] = {
                **{k: v for k, v in d.items() if k not in ("created_at", "updated_at")},
                "user_id": u["id"],
            }
    return users, devices


def workload(rng: random.Random, n: int) -> list[tuple[str, Any]]:
    """Identifies with data changes, aliases that merge, devices with token moves, events with
    and without message ids, deletes: over small pools, so that they meet. Bursts of devices,
    some with tokens (so renamed when found by one), push users (and merges) past the 25-device
    cap."""
    anon = [f"a{i}" for i in range(8)]
    ext = [f"e{i}" for i in range(4)]
    steps: list[tuple[str, Any]] = []
    for i in range(n):
        kind = rng.choices(
            ["identify", "alias", "devices", "events", "delete", "burst"], [4, 2, 3, 4, 1, 2]
        )[0]
        ids = rng.choice(
            [{"anonymous_id": rng.choice(anon)}, {"external_id": rng.choice(ext)}]
            + [{"anonymous_id": rng.choice(anon), "external_id": rng.choice(ext)}]
        )
        if kind == "identify":
            body: dict[str, Any] = dict(ids)
            for field, values in (
                ("email", [None, "x@y.z", "w@y.z"]),
                ("phone", [None, "+14155552671", "+33612345678", "bad"]),
                ("timezone", [None, "UTC", "Europe/Paris"]),
                ("locale", [None, "en", "fr"]),
            ):
                if rng.random() < 0.4:
                    body[field] = rng.choice(values)
            if rng.random() < 0.6:
                keys = rng.sample(["plan", "n", "tags", "deep"], rng.randint(1, 3))
                body["data"] = {k: rng.choice([1, "pro", [1, 2], {"x": i}, None]) for k in keys}
            steps.append(("identify", body))
        elif kind == "alias":
            steps.append(
                ("alias", {"anonymous_id": rng.choice(anon), "external_id": rng.choice(ext)})
            )
        elif kind == "devices":
            body = device(rng.choice(["d0", "d1", "d2", "d3"]), **ids)
            body["token"] = rng.choice([None, "t0", "t1", "t2"])
            if rng.random() < 0.3:
                del body["token"]
            if rng.random() < 0.3:
                body["os_version"] = rng.choice(["16", "17"])
            if rng.random() < 0.3:
                body[rng.choice(["push", "lang"])] = rng.choice([True, "de"])
            steps.append(("devices", body))
        elif kind == "events":
            events = []
            for j in range(rng.randint(1, 3)):
                ev: dict[str, Any] = {"name": rng.choice(["open", "buy"]), **ids}
                if rng.random() < 0.3:
                    ev["message_id"] = f"m{rng.randint(0, 20)}"  # repeats are retries
                if rng.random() < 0.3:
                    ev["user"] = {"email": rng.choice(["x@y.z", "u@v.w"]), "data": {"ev": j}}
                events.append(ev)
            steps.append(("events", events))
        elif kind == "burst":
            count = rng.randint(10, 30)
            burst = [
                device(f"c{rng.randrange(60)}", rng.choice([None, f"ct{rng.randrange(60)}"]), **ids)
                for _ in range(count)
            ]
            steps.append(("burst", burst))
        else:
            steps.append(("delete", rng.choice(ext)))
    return steps


@pytest.mark.parametrize("seed", range(1, 9))
def test_the_feed_alone_rebuilds_users_and_devices(tenant: Tenant, seed: int) -> None:
    rng = random.Random(seed)

    followed: list[dict] = []  # a consumer reading as it goes, as a destination does
    cursor = None
    for i, (kind, body) in enumerate(workload(rng, 120)):
        if kind == "delete":
            assert tenant.secret.delete(f"/api/client/users/{body}").status_code in (204, 404)
        elif kind == "burst":
            for one in body:
                post(tenant, "devices", one)
        else:
            r = tenant.post(kind, body)
            # an alias of an id that belongs to another external id is refused, alone
            assert r.status_code == 204 or (kind == "alias" and r.status_code == 422), r.text
        if i % 7 == 0:
            new, cursor = items(tenant, cursor)
            followed += new
    new, cursor = items(tenant, cursor)
    followed += new
    expected = read_state(tenant)
    # the workload did what it is for
    assert expected[0] and {
        "user_merged",
        "user_deleted",
        "device_registered",
        "device_removed",
    } <= {e["name"] for e in followed}

    # the OpenAPI document says what each item's data holds
    schemas = json.dumps(document()["components"]["schemas"])
    defs = json.loads(schemas.replace("#/components/schemas/", "#/$defs/"))
    item = jsonschema.Draft202012Validator({"$defs": defs, "$ref": "#/$defs/FeedEvent"})
    for e in followed:
        item.validate(e)
    assert not item.is_valid({**followed[0], "name": "user_updated", "data": {"plan": 1}})

    for source in (followed, items(tenant)[0]):  # as it went, and read from the start now
        users, devices = rebuild(source)
        for user in users.values():
            user["data"] = without_nulls(user["data"])
        assert users == expected[0]
        assert devices == expected[1]


def test_a_device_moved_then_renamed_leaves_no_trace_when_its_user_is_merged_away(
    tenant: Tenant,
) -> None:
    """The move and the rename are items of a1, which leave with it: the rename's
    device_removed stays, so a consumer reading after the merge does not keep c1 under e1."""
    post(tenant, "devices", device("c1", None, external_id="e1"))
    post(tenant, "identify", {"external_id": "e2"})
    post(tenant, "devices", device("c1", "ct1", anonymous_id="a1"))  # moved to a1
    post(tenant, "devices", device("c2", "ct1", anonymous_id="a1"))  # renamed there
    post(tenant, "alias", {"anonymous_id": "a1", "external_id": "e2"})  # a1 merged away
    users, devices = rebuild(items(tenant)[0])
    assert sorted(devices) == ["c2"]
