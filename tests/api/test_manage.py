"""The management API over HTTP: user list, devices, deleting a user, the event feed, export."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

import pier.store
from conftest import Tenant, make_tenant
from pier.cli import main

USER_FIELDS = {
    "id",
    "anonymous_id",
    "anonymous_ids",
    "external_id",
    "email",
    "phone",
    "timezone",
    "locale",
    "data",
    "devices",
    "created_at",
    "updated_at",
}


def device(device_id: str, **user: str) -> dict:
    return {
        **user,
        "device_id": device_id,
        "os": "iOS",
        "model": "iPhone15,2",
        "app_build": "1",
        "app_version": "1.0",
        "token": f"token-{device_id}",
    }


def pages(tenant: Tenant, path: str, **params: object) -> list[list[dict]]:
    """Every page of a cursor-paged list."""
    found, cursor = [], None
    while True:
        r = tenant.secret.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        found.append(r.json()["results"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return found


def feed(tenant: Tenant, after: str | None = None, limit: int = 1000) -> dict:
    params: dict[str, object] = {"limit": limit, **({"after": after} if after else {})}
    r = tenant.secret.get("/api/client/events", params=params)
    assert r.status_code == 200, r.text
    return r.json()


# -- users --------------------------------------------------------------------------------------
def test_users_pages_newest_first(tenant: Tenant) -> None:
    for i in range(23):
        assert tenant.post("identify", {"external_id": f"u{i}"}).status_code == 204
    got = pages(tenant, "/api/client/users", limit=10)
    assert [len(p) for p in got] == [10, 10, 3]
    users = [u for p in got for u in p]
    assert [u["external_id"] for u in users] == [f"u{i}" for i in reversed(range(23))]
    assert set(users[0]) == USER_FIELDS
    assert len(users[0]["anonymous_ids"]) == 1  # generated, as for every new user
    r = tenant.secret.get("/api/client/users")
    assert len(r.json()["results"]) == 23 and r.json()["next_cursor"] is None


def test_users_q_matches_ids_email_and_phone_exactly(tenant: Tenant) -> None:
    tenant.post(
        "identify",
        {"external_id": "ext-1", "anonymous_id": "anon-1", "email": "a@example.com"},
    )
    tenant.post("alias", {"anonymous_id": "anon-2", "external_id": "ext-1"})
    tenant.post("identify", {"external_id": "ext-2", "phone": "+14155550100"})
    tenant.post("identify", {"external_id": "ext-3", "email": "c@example.com"})

    def search(q: str) -> list[str]:
        r = tenant.secret.get("/api/client/users", params={"q": q})
        assert r.status_code == 200, r.text
        return [u["external_id"] for u in r.json()["results"]]

    for q in ("ext-1", "anon-1", "anon-2", "a@example.com"):
        assert search(q) == ["ext-1"], q
    assert search("+14155550100") == ["ext-2"]
    for q in ("ext", "A@example.com", "example.com", "anon", "nobody"):
        assert search(q) == [], q
    assert len(search("")) == 3  # an empty q lists everyone


def test_user_list_checks_key_limit_and_cursor(tenant: Tenant) -> None:
    assert tenant.public.get("/api/client/users").status_code == 403
    for bad in ("0", "1001", "x"):
        r = tenant.secret.get("/api/client/users", params={"limit": bad})
        assert r.status_code == 422 and r.json()["errors"][0]["path"] == "/limit"
    assert tenant.secret.get("/api/client/users", params={"cursor": "nope"}).status_code == 422


def test_devices_of_a_user(tenant: Tenant) -> None:
    assert tenant.post("devices", device("d1", external_id="e1")).status_code == 204
    assert tenant.post("devices", device("d2", external_id="e1")).status_code == 204
    assert tenant.post("devices", device("d3", external_id="e2")).status_code == 204
    r = tenant.secret.get("/api/client/users/e1/devices")
    assert r.status_code == 200
    found = r.json()["results"]
    assert [d["device_id"] for d in found] == ["d1", "d2"]
    assert found[0]["token"] == "token-d1" and found[0]["os"] == "iOS"
    anon = tenant.user("e1")["anonymous_id"]
    r = tenant.secret.get(f"/api/client/users/{anon}/devices", params={"by": "anonymous_id"})
    assert [d["device_id"] for d in r.json()["results"]] == ["d1", "d2"]
    tenant.post("identify", {"external_id": "bare"})
    assert tenant.secret.get("/api/client/users/bare/devices").json() == {"results": []}
    assert tenant.secret.get("/api/client/users/nobody/devices").status_code == 404
    assert tenant.public.get("/api/client/users/e1/devices").status_code == 403


# -- delete -------------------------------------------------------------------------------------
def test_delete_user_removes_everything_of_that_user_only(tenant: Tenant) -> None:
    for ext in ("gone", "kept"):
        tenant.post("identify", {"external_id": ext, "anonymous_id": f"{ext}-a1", "email": "x@y.z"})
        tenant.post("alias", {"anonymous_id": f"{ext}-a2", "external_id": ext})
        tenant.post("devices", device(f"{ext}-d1", external_id=ext))
        tenant.post("events", [{"name": "e", "external_id": ext}] * 5)
    before = tenant.counts()
    kept_events = tenant.events("kept")

    r = tenant.secret.delete("/api/client/users/gone")
    assert r.status_code == 204 and r.content == b""
    after = tenant.counts()
    assert after == {
        "users": before["users"] - 1,
        "user_anonymous_ids": before["user_anonymous_ids"] - 2,
        "devices": before["devices"] - 1,
        "events": before["events"] - 9 + 1,  # 5 events, 4 items; and its user_deleted
    }
    assert tenant.secret.get("/api/client/users/gone").status_code == 404
    assert tenant.secret.get("/api/client/users/gone-a2?by=anonymous_id").status_code == 404
    assert tenant.events("kept") == kept_events
    assert tenant.user("kept")["anonymous_ids"] == ["kept-a1", "kept-a2"]
    # the feed keeps its tombstone only (the user's row is gone: its ids are in the data)
    items = feed(tenant)["results"]
    [tombstone] = [e for e in items if e["external_id"] != "kept"]
    assert tombstone["name"] == "user_deleted" and tombstone["data"] == {
        "external_id": "gone",
        "anonymous_ids": ["gone-a1", "gone-a2"],
        "device_ids": ["gone-d1"],
    }
    assert tombstone["user_id"] not in {e["user_id"] for e in items if e is not tombstone}
    assert (tombstone["external_id"], tombstone["anonymous_id"]) == (None, None)

    # Its ids are free again: the next event makes a new user.
    assert tenant.post("events", [{"name": "back", "anonymous_id": "gone-a1"}]).status_code == 204
    assert tenant.user("gone-a1", by="anonymous_id")["external_id"] is None


def test_delete_by_anonymous_id_and_unknown_users(tenant: Tenant) -> None:
    tenant.post("identify", {"anonymous_id": "only-anon"})
    r = tenant.secret.delete("/api/client/users/only-anon", params={"by": "anonymous_id"})
    assert r.status_code == 204
    assert tenant.counts()["users"] == 0
    r = tenant.secret.delete("/api/client/users/only-anon", params={"by": "anonymous_id"})
    assert r.status_code == 404 and r.json()["status"] == "error"
    assert tenant.secret.delete("/api/client/users/nobody").status_code == 404
    r = tenant.secret.delete("/api/client/users/x", params={"by": "email"})
    assert r.status_code == 422


def test_delete_needs_a_secret_key(tenant: Tenant) -> None:
    tenant.post("identify", {"external_id": "e1"})
    assert tenant.public.delete("/api/client/users/e1").status_code == 403
    r = tenant.secret.delete("/api/client/users/e1", headers={"Authorization": ""})
    assert r.status_code == 401
    assert tenant.user("e1")["external_id"] == "e1"


def test_delete_racing_new_events_leaves_no_orphan_rows(tenant: Tenant) -> None:
    """Events for a user keep arriving while it is deleted again and again: every row is either
    deleted with a user or belongs to the user that the next event creates."""
    stop = threading.Event()
    posted = []

    def post_events() -> None:
        i = 0
        while not stop.is_set() and i < 2000:
            body = [{"name": f"e{i}", "external_id": "victim", "anonymous_id": f"a{i % 3}"}]
            posted.append(tenant.post("events", body).status_code)
            i += 1

    sender = threading.Thread(target=post_events)
    sender.start()
    try:
        deadline = time.monotonic() + 3
        statuses = set()
        while time.monotonic() < deadline:
            statuses.add(tenant.secret.delete("/api/client/users/victim").status_code)
    finally:
        stop.set()
        sender.join(timeout=60)
    assert set(posted) == {204}
    assert statuses <= {204, 404} and 204 in statuses
    tenant.secret.delete("/api/client/users/victim")
    counts = tenant.counts()
    assert counts == {"users": 0, "user_anonymous_ids": 0, "devices": 0, "events": counts["events"]}
    items, after, more = [], None, True  # only the tombstones are left (however many)
    while more:
        page = feed(tenant, after, limit=1000)
        items += page["results"]
        after, more = page["next_cursor"], page["has_more"]
    assert len(items) == counts["events"] and {e["name"] for e in items} == {"user_deleted"}


# -- the event feed -------------------------------------------------------------------------------
def test_event_feed_in_storage_order_with_cursor(tenant: Tenant) -> None:
    tenant.post("events", [{"name": f"a{i}", "external_id": "u1"} for i in range(5)])
    tenant.post("events", [{"name": f"b{i}", "anonymous_id": "anon-2"} for i in range(4)])
    expected = ["user_created", "user_updated", *(f"a{i}" for i in range(5))]
    expected += ["user_created", "user_updated", *(f"b{i}" for i in range(4))]

    names, after, has_more = [], None, True
    while has_more:
        page = feed(tenant, after, limit=4)
        assert len(page["results"]) <= 4
        names += [e["name"] for e in page["results"]]
        after, has_more = page["next_cursor"], page["has_more"]
    assert names == expected

    # Caught up: an empty page keeps the cursor; new events come after it.
    page = feed(tenant, after)
    assert page == {"results": [], "next_cursor": after, "has_more": False}
    tenant.post("events", [{"name": "c0", "external_id": "u1"}])
    page = feed(tenant, after)
    assert [e["name"] for e in page["results"]] == ["c0"]

    everything = feed(tenant)["results"]
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids)
    first, last = everything[2], everything[-2]
    assert first["external_id"] == "u1" and first["name"] == "a0"
    assert first["anonymous_id"] == tenant.user("u1")["anonymous_id"]
    assert last["external_id"] is None and last["anonymous_id"] == "anon-2"
    assert last["user_id"] == tenant.user("anon-2", by="anonymous_id")["id"]
    assert {"id", "name", "data", "created_at", "received_at", "user_id"} <= set(first)


def test_event_feed_never_skips_events_after_a_deletion(tenant: Tenant) -> None:
    tenant.post("events", [{"name": "a", "external_id": "first"}])
    tenant.post("events", [{"name": "b", "external_id": "newest"}])
    cursor = feed(tenant)["next_cursor"]
    assert tenant.secret.delete("/api/client/users/newest").status_code == 204
    tenant.post("events", [{"name": "c", "external_id": "first"}])
    # ids are not reused: the tombstone and the new event come after
    assert [e["name"] for e in feed(tenant, cursor)["results"]] == ["user_deleted", "c"]


def test_event_feed_of_an_empty_project_and_bad_parameters(tenant: Tenant) -> None:
    assert feed(tenant) == {"results": [], "next_cursor": None, "has_more": False}
    r = tenant.secret.get("/api/client/events", params={"after": "garbage"})
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "/after"
    r = tenant.secret.get("/api/client/events", params={"limit": "1001"})
    assert r.status_code == 422
    assert tenant.public.get("/api/client/events").status_code == 403


def test_tenants_see_only_their_own_project(tenant: Tenant) -> None:
    other = make_tenant(tenant.server)
    try:
        tenant.post("devices", device("d1", external_id="mine"))
        tenant.post("events", [{"name": "secret-event", "external_id": "mine"}])
        other.post("identify", {"external_id": "theirs"})
        listed = other.secret.get("/api/client/users").json()["results"]
        assert [u["external_id"] for u in listed] == ["theirs"]
        assert other.secret.get("/api/client/users", params={"q": "mine"}).json()["results"] == []
        assert other.secret.get("/api/client/users/mine/devices").status_code == 404
        assert other.secret.delete("/api/client/users/mine").status_code == 404
        names = [e["name"] for e in feed(other)["results"]]
        assert names == ["user_created", "user_updated"]
        assert tenant.user("mine")["external_id"] == "mine"  # still there
    finally:
        other.public.close()
        other.secret.close()


# -- pier export ----------------------------------------------------------------------------------
def test_export_streams_the_feed_as_ndjson_in_pages(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant.post(
        "events", [{"name": f"e{i}", "external_id": "u1", "data": {"i": i}} for i in range(20)]
    )
    expected = feed(tenant)["results"]
    limits: list[int] = []
    make_store = pier.store.make_store  # (store.opened makes the CLI's stores)

    def counting_store(url: str, *args: Any):  # type: ignore[no-untyped-def]
        store = make_store(url, *args)
        event_feed = store.event_feed

        async def paged(project_id: int, after: int | None, limit: int):  # type: ignore[no-untyped-def]
            limits.append(limit)
            return await event_feed(project_id, after, limit)

        store.event_feed = paged  # type: ignore[method-assign]
        return store

    monkeypatch.setattr(pier.store, "make_store", counting_store)
    url = tenant.server.database_url
    args = ["export", "--project", str(tenant.id), "--database-url", url, "--page-size", "6"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout_bytes.decode().splitlines()
    assert [json.loads(line) for line in lines] == expected
    assert len(limits) == 4 and set(limits) == {6}  # 22 items read 6 at a time
    cursor = result.stderr.split("--after ")[1].strip()
    assert "exported 22 items" in result.stderr

    # Resuming from the cursor exports only what came later.
    tenant.post("events", [{"name": "later", "external_id": "u1"}])
    result = CliRunner().invoke(main, [*args, "--after", cursor])
    lines = result.stdout_bytes.decode().splitlines()
    assert [msgspec.json.decode(line)["name"] for line in lines] == ["later"]


def test_export_rejects_unknown_project_and_bad_cursor(tenant: Tenant) -> None:
    url = tenant.server.database_url
    r = CliRunner().invoke(main, ["export", "--project", "999999", "--database-url", url])
    assert r.exit_code != 0 and "no project" in r.output
    r = CliRunner().invoke(
        main, ["export", "--project", str(tenant.id), "--after", "zz", "--database-url", url]
    )
    assert r.exit_code != 0 and "--after" in r.output
