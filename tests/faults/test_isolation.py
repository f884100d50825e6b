"""Tenant isolation, on every backend: project A's keys can neither read nor change project B's
data through any endpoint, even when A names B's ids, device ids, tokens, message ids and
cursors. Every operation of the OpenAPI document must have a check here."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from conftest import LiveServer, Tenant, make_tenant
from pier.api.openapi import document

DEVICE = {"os": "iOS", "model": "iPhone", "app_build": "1", "app_version": "1.0"}
MARK = {"secret": "marker-b"}
EVERYONE = {"uuid": "r", "path": "$", "type": "wrapper", "group": "parent", "operator": "and"}


@pytest.fixture
def pair(server: LiveServer) -> tuple[Tenant, Tenant]:
    a, b = make_tenant(server), make_tenant(server)
    yield a, b
    for t in (a, b):
        t.public.close()
        t.secret.close()


def seed(b: Tenant) -> None:
    """B's data: a user known by external and anonymous id, with a device and events."""
    ok = [
        b.post("identify", {"external_id": "b-user", "anonymous_id": "b-anon", "email": "b@b"}),
        b.post(
            "devices", {"external_id": "b-user", "device_id": "b-dev", "token": "b-tok"} | DEVICE
        ),
        b.post("events", [{"name": "b-event", "external_id": "b-user", "message_id": "b-m1"}]),
        b.post("identify", {"external_id": "shared", "email": "b-shared@b"}),
        b.post("identify", {"external_id": "b-only-user", "anonymous_id": "b-only-anon"}),
        b.post("alias", {"anonymous_id": "b-anon2", "external_id": "b-user"}),
        b.post(
            "events",
            [{"name": "b-event", "external_id": "b-only-user", "data": MARK, "message_id": "b-m2"}],
        ),
        b.post("devices", {"external_id": "b-only-user", "device_id": "b-only-dev"} | DEVICE),
    ]
    assert [r.status_code for r in ok] == [204] * 8
    static = b.secret.post("/api/client/lists", json={"name": "b-static", "type": "static"})
    r = b.secret.post(
        f"/api/client/lists/{static.json()['id']}/users", json={"external_ids": ["b-only-user"]}
    )
    assert r.status_code == 204, r.text
    dynamic = b.secret.post(
        "/api/client/lists", json={"name": "b-dynamic", "type": "dynamic", "rule": EVERYONE}
    )
    assert dynamic.status_code == 201, dynamic.text
    while b.secret.get(f"/api/client/lists/{dynamic.json()['id']}").json()["state"] == "loading":
        time.sleep(0.02)
    hook = {"kind": "webhook", "url": "http://127.0.0.1:9/b-hook", "name": "b-dest", "from": "now"}
    made = b.secret.post("/api/client/destinations", json=hook)
    assert made.status_code == 201, made.text
    assert b.secret.post(f"/api/client/destinations/{made.json()['id']}/pause").status_code == 200


def snapshot(b: Tenant) -> tuple[object, ...]:
    """Everything of B's, read with B's own secret key."""
    users = b.secret.get("/api/client/users", params={"limit": 1000}).json()
    feed = b.secret.get("/api/client/events", params={"limit": 1000}).json()
    lists = b.secret.get("/api/client/lists").json()["results"]
    members = [
        b.secret.get(f"/api/client/lists/{x['id']}/users", params={"limit": 1000}).json()
        for x in lists
    ]
    destinations = b.secret.get("/api/client/destinations").json()
    return users, feed, b.counts(), lists, members, destinations


def b_cursors(b: Tenant) -> dict[str, str]:
    users = b.secret.get("/api/client/users", params={"limit": 1}).json()
    events = b.secret.get("/api/client/users/b-user/events", params={"limit": 1}).json()
    feed = b.secret.get("/api/client/events", params={"limit": 1}).json()
    return {
        "users": users["next_cursor"] or "",
        "events": events["next_cursor"] or "",
        "feed": feed["next_cursor"],
    }


# What A never sends itself (A does send some of B's ids, to try to reach B's data with them)
B_VALUES = (
    "b-static",
    "b-dynamic",
    "b@b",
    "b-shared@b",
    "b-event",
    "b-only-user",
    "b-only-anon",
    "b-only-dev",
    "marker-b",
    "b-hook",
)


def no_b(text: str) -> None:
    for value in B_VALUES:
        assert value not in text, f"project B's {value!r} leaked"


Check = Callable[[Tenant, Tenant, dict[str, str]], None]


def write_identify(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    assert a.post("identify", {"external_id": "shared", "email": "a@a"}).status_code == 204
    assert a.post("identify", {"anonymous_id": "b-anon", "external_id": "a-x"}).status_code == 204
    assert a.user("shared")["email"] == "a@a"


def write_alias(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    r = a.post("alias", {"anonymous_id": "b-anon2", "external_id": "a-alias"})
    assert r.status_code == 204, r.text
    r = a.post("alias", {"anonymous_id": "a-anon", "external_id": "b-user"})
    assert r.status_code == 204, r.text


def write_devices(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    body = {"external_id": "a-user", "device_id": "b-dev", "token": "b-tok"} | DEVICE
    assert a.post("devices", body).status_code == 204
    body = {"external_id": "b-user", "device_id": "a-dev", "token": "b-tok"} | DEVICE
    assert a.post("devices", body).status_code == 204


def write_events(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    body = [{"name": "a-event", "external_id": "b-user", "message_id": "b-m1"}]
    assert a.post("events", body).status_code == 204
    names = [e["name"] for e in a.events("b-user")]  # A's own: its event and Pier's items
    assert names[0] == "a-event" and names[-1] == "user_created"


def write_track(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    body = {"event": "a-track", "external_id": "b-user", "message_id": "b-m2"}
    assert a.post("track", body).status_code == 204
    assert "a-track" in [e["name"] for e in a.events("b-user")]


def write_segment(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    calls = [
        {"type": "identify", "userId": "shared", "traits": {"email": "a-seg@a"}},
        {"type": "track", "userId": "b-user", "event": "a-seg", "messageId": "b-m1"},
        {"type": "alias", "previousId": "b-anon2", "userId": "a-seg-user"},
    ]
    r = a.post("segment", {"batch": calls})
    assert r.status_code in (200, 422), r.text  # b-anon2 may be A's own by now: never B's
    assert a.post("segment", {"batch": calls[:2]}).status_code == 200
    # B's key in the body (analytics.js's writeKey) is B's business: A's header wins
    r = a.public.post("/api/client/segment", json={"writeKey": b.public_key, "batch": calls[:2]})
    assert r.status_code == 200


def write_segment_call(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    call = {"userId": "b-user", "event": "a-seg-t", "properties": {"x": 1}}
    assert a.public.post("/api/client/segment/t", json=call).status_code == 200
    assert "a-seg-t" in [e["name"] for e in a.events("b-user")]


def read_feed(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    for params in ({}, {"after": cur["feed"]}, {"limit": 1000}):
        r = a.secret.get("/api/client/events", params=params)
        assert r.status_code == 200, r.text
        no_b(r.text)


def read_users(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    for params in ({}, {"q": "b@b"}, {"q": "b-only-anon"}, {"cursor": cur["users"]}):
        r = a.secret.get("/api/client/users", params=params)
        assert r.status_code == 200, r.text
        no_b(r.text)


def read_user(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    for path, params in (
        ("/api/client/users/b-only-user", {}),
        ("/api/client/users/b-only-anon", {"by": "anonymous_id"}),
    ):
        r = a.secret.get(path, params=params)
        assert r.status_code == 404, r.text


def read_user_events(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    r = a.secret.get("/api/client/users/b-only-user/events")
    assert r.status_code == 404
    r = a.secret.get("/api/client/users/b-user/events", params={"cursor": cur["events"]})
    assert r.status_code in (200, 404)  # A's own b-user, if A made one: never B's events
    no_b(r.text)


def read_user_devices(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    assert a.secret.get("/api/client/users/b-only-user/devices").status_code == 404
    r = a.secret.get("/api/client/users/b-only-anon/devices", params={"by": "anonymous_id"})
    assert r.status_code == 404


def delete_device(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    r = a.secret.delete("/api/client/devices/b-only-dev")
    assert r.status_code == 404, r.text
    no_b(r.text.replace("b-only-dev", ""))  # the id A sent, said back; nothing else of B's


def delete_user(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    assert a.secret.delete("/api/client/users/b-only-user").status_code == 404
    r = a.secret.delete("/api/client/users/b-only-anon", params={"by": "anonymous_id"})
    assert r.status_code == 404
    assert b.user("b-only-user")["external_id"] == "b-only-user"


def b_lists(b: Tenant) -> list[int]:
    return [x["id"] for x in b.secret.get("/api/client/lists").json()["results"]]


def read_lists(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    r = a.secret.get("/api/client/lists")
    assert r.status_code == 200, r.text
    no_b(r.text)


def b_destination(b: Tenant) -> str:
    (d,) = b.secret.get("/api/client/destinations").json()["results"]
    return f"/api/client/destinations/{d['id']}"


def list_destinations(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    r = a.secret.get("/api/client/destinations")
    assert r.status_code == 200, r.text
    no_b(r.text)


def write_list(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    r = a.secret.post(
        "/api/client/lists", json={"name": "a-list", "type": "dynamic", "rule": EVERYONE}
    )
    assert r.status_code == 201, r.text
    assert r.json()["project_id"] == a.id


def preview_list(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    r = a.secret.post("/api/client/lists/preview", json={"rule": EVERYONE})
    assert r.status_code == 200, r.text
    no_b(r.text)


def on_b_lists(method: str, suffix: str = "", body: object = None) -> Check:
    def check(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
        for list_id in b_lists(b):
            r = a.secret.request(method, f"/api/client/lists/{list_id}{suffix}", json=body)
            assert r.status_code == 404, (method, suffix, r.text)

    return check


def add_destination(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    body = {"kind": "webhook", "url": "http://127.0.0.1:9/a-hook", "from": "now"}
    r = a.secret.post("/api/client/destinations", json=body)
    assert r.status_code == 201, r.text
    assert a.secret.post(f"/api/client/destinations/{r.json()['id']}/pause").status_code == 200


def destination_check(method: str, tail: str = "", body: object = None) -> Check:
    """A names B's destination: 404, as if it did not exist."""

    def check(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
        r = a.secret.request(method, b_destination(b) + tail, json=body)
        assert r.status_code == 404, r.text
        no_b(r.text)

    return check


def read_user_lists(a: Tenant, b: Tenant, cur: dict[str, str]) -> None:
    assert a.secret.get("/api/client/users/b-only-user/lists").status_code == 404
    r = a.secret.get("/api/client/users/b-user/lists")
    assert r.status_code in (200, 404)  # A's own b-user, if A made one: never B's lists
    no_b(r.text)


CHECKS: dict[tuple[str, str], Check] = {
    ("post", "/api/client/identify"): write_identify,
    ("post", "/api/client/alias"): write_alias,
    ("post", "/api/client/devices"): write_devices,
    ("post", "/api/client/events"): write_events,
    ("post", "/api/client/track"): write_track,
    ("post", "/api/client/segment"): write_segment,
    ("post", "/api/client/segment/{call}"): write_segment_call,
    ("get", "/api/client/events"): read_feed,
    ("get", "/api/client/users"): read_users,
    ("get", "/api/client/users/{ref}"): read_user,
    ("delete", "/api/client/users/{ref}"): delete_user,
    ("delete", "/api/client/devices/{device_id}"): delete_device,
    ("get", "/api/client/users/{ref}/events"): read_user_events,
    ("get", "/api/client/users/{ref}/devices"): read_user_devices,
    ("get", "/api/client/destinations"): list_destinations,
    ("post", "/api/client/destinations"): add_destination,
    ("get", "/api/client/destinations/{id}"): destination_check("GET"),
    ("delete", "/api/client/destinations/{id}"): destination_check("DELETE"),
    ("post", "/api/client/destinations/{id}/pause"): destination_check("POST", "/pause"),
    ("post", "/api/client/destinations/{id}/resume"): destination_check("POST", "/resume"),
    ("post", "/api/client/destinations/{id}/replay"): destination_check(
        "POST", "/replay", {"from": "beginning"}
    ),
    ("get", "/api/client/destinations/{id}/dead-letters"): destination_check(
        "GET", "/dead-letters"
    ),
    ("post", "/api/client/destinations/{id}/redeliver"): destination_check(
        "POST", "/redeliver", {"all": True}
    ),
    # last: A's own list would add list_entered items to the events the checks above expect
    ("get", "/api/client/lists"): read_lists,
    ("post", "/api/client/lists"): write_list,
    ("post", "/api/client/lists/preview"): preview_list,
    ("get", "/api/client/lists/{id}"): on_b_lists("GET"),
    ("patch", "/api/client/lists/{id}"): on_b_lists("PATCH", "", {"name": "a-renamed"}),
    ("delete", "/api/client/lists/{id}"): on_b_lists("DELETE"),
    ("post", "/api/client/lists/{id}/recount"): on_b_lists("POST", "/recount"),
    ("get", "/api/client/lists/{id}/users"): on_b_lists("GET", "/users"),
    ("post", "/api/client/lists/{id}/users"): on_b_lists(
        "POST", "/users", {"external_ids": ["b-only-user"]}
    ),
    ("delete", "/api/client/lists/{id}/users"): on_b_lists(
        "DELETE", "/users", {"external_ids": ["b-only-user"]}
    ),
    ("get", "/api/client/users/{ref}/lists"): read_user_lists,
}


def test_every_endpoint_has_an_isolation_check() -> None:
    operations = {(m, p) for p, item in document()["paths"].items() for m in item}
    assert operations == set(CHECKS)


def test_one_projects_keys_never_reach_anothers_data(pair: tuple[Tenant, Tenant]) -> None:
    a, b = pair
    seed(b)
    cursors = b_cursors(b)
    for (method, path), check in CHECKS.items():
        before = snapshot(b)
        check(a, b, cursors)
        assert snapshot(b) == before, f"{method} {path} changed project B"

    # Nothing A can read anywhere names B's data, and B's own data is intact.
    for path, params in (
        ("/api/client/users", {"limit": 1000}),
        ("/api/client/events", {"limit": 1000}),
        ("/api/client/users/shared", {}),
        ("/api/client/users/b-user/events", {}),
    ):
        r = a.secret.get(path, params=params)
        assert r.status_code == 200, r.text
        no_b(r.text)
    user = b.user("b-user")
    assert user["anonymous_ids"] == ["b-anon", "b-anon2"] and user["email"] == "b@b"
    assert [(d["device_id"], d["token"]) for d in user["devices"]] == [("b-dev", "b-tok")]
    assert [e["message_id"] for e in b.events("b-user") if e["name"] == "b-event"] == ["b-m1"]
    assert b.user("shared")["email"] == "b-shared@b"
