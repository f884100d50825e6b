"""The list routes (docs/lists.md), on every backend, over real HTTP: dynamic lists computed in
the background over the data already stored, static lists by external id, the preview, a user's
lists, and the 422/409/403/404 answers (which change nothing)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from click.testing import CliRunner

from conftest import Tenant, db_call
from pier.cli import main
from pier.clock import now_ms

ROOT = {"uuid": "r", "path": "$", "type": "wrapper", "group": "parent", "operator": "and"}


def tree(*children: dict[str, Any]) -> dict[str, Any]:
    return {**ROOT, "children": [{**c, "root_uuid": "r", "parent_uuid": "r"} for c in children]}


PRO = tree({"uuid": "p", "type": "string", "group": "user", "path": "$.plan", "operator": "=",
            "value": "pro"})  # fmt: skip
BOUGHT = tree({"uuid": "e", "type": "wrapper", "group": "event", "path": "$.name",
               "operator": "and", "value": "purchased"})  # fmt: skip


def seed(t: Tenant) -> None:
    for ext, plan in (("ann", "pro"), ("bob", "free"), ("cat", "pro")):
        r = t.post("identify", {"external_id": ext, "data": {"plan": plan}})
        assert r.status_code == 204, r.text
    assert t.post("events", [{"name": "purchased", "external_id": "bob"}]).status_code == 204


def settled(t: Tenant, list_id: int) -> dict[str, Any]:
    """The list once its computation is over (it runs in the server's background)."""
    for _ in range(500):
        body = t.secret.get(f"/api/client/lists/{list_id}").json()
        if body["state"] != "loading":
            return body
        time.sleep(0.02)
    raise AssertionError(f"list {list_id} still loading")


def members(t: Tenant, list_id: int, **params: Any) -> list[str]:
    r = t.secret.get(f"/api/client/lists/{list_id}/users", params=params)
    assert r.status_code == 200, r.text
    return sorted(u["external_id"] for u in r.json()["results"])


def create(t: Tenant, body: dict[str, Any]) -> httpx.Response:
    return t.secret.post("/api/client/lists", json=body)


def test_a_dynamic_list_is_computed_over_the_stored_data(tenant: Tenant) -> None:
    seed(tenant)
    r = create(tenant, {"name": "Pro", "type": "dynamic", "rule": PRO})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["state"] == "loading" and made["progress"] == 0 and made["rule"] == PRO
    body = settled(tenant, made["id"])
    assert body["state"] == "draft" and body["users_count"] == 2 and body["progress"] is None
    assert members(tenant, made["id"]) == ["ann", "cat"]
    # published: ready, the same members
    r = tenant.secret.patch(f"/api/client/lists/{made['id']}", json={"published": True})
    assert r.status_code == 200 and r.json()["state"] == "ready", r.text
    # a new rule: computed again
    r = tenant.secret.patch(f"/api/client/lists/{made['id']}", json={"rule": BOUGHT, "name": "B"})
    assert r.status_code == 200 and r.json()["state"] == "loading", r.text
    body = settled(tenant, made["id"])
    assert (body["state"], body["name"], body["rule"]) == ("ready", "B", BOUGHT)
    assert members(tenant, made["id"]) == ["bob"]
    listed = tenant.secret.get("/api/client/lists").json()["results"]
    assert [(x["id"], x["users_count"]) for x in listed] == [(made["id"], 1)]
    r = tenant.secret.get("/api/client/users/bob/lists")
    assert [x["id"] for x in r.json()["results"]] == [made["id"]]
    assert tenant.secret.get("/api/client/users/ann/lists").json()["results"] == []


def test_recount_computes_again_and_members_are_paged(tenant: Tenant) -> None:
    r = create(tenant, {"name": "All", "type": "dynamic", "rule": ROOT})
    list_id = r.json()["id"]
    assert settled(tenant, list_id)["users_count"] == 0
    seed(tenant)  # kept current as the users arrive
    assert tenant.secret.get(f"/api/client/lists/{list_id}").json()["users_count"] == 3
    r = tenant.secret.post(f"/api/client/lists/{list_id}/recount")
    assert r.status_code == 200 and r.json()["state"] == "loading"
    assert settled(tenant, list_id)["users_count"] == 3
    page = tenant.secret.get(f"/api/client/lists/{list_id}/users", params={"limit": 2}).json()
    rest = tenant.secret.get(
        f"/api/client/lists/{list_id}/users", params={"cursor": page["next_cursor"]}
    ).json()
    assert rest["next_cursor"] is None
    got = [u["external_id"] for u in page["results"] + rest["results"]]
    assert sorted(got) == ["ann", "bob", "cat"] and len(page["results"]) == 2


def test_a_static_list_by_external_id(tenant: Tenant) -> None:
    seed(tenant)
    r = create(tenant, {"name": "VIP", "type": "static", "tags": ["x"], "is_visible": True})
    assert r.status_code == 201 and r.json()["state"] == "draft" and r.json()["rule"] is None
    list_id = r.json()["id"]
    url = f"/api/client/lists/{list_id}/users"
    r = tenant.secret.post(url, json={"external_ids": ["ann", "bob"]})
    assert r.status_code == 204, r.text
    r = tenant.secret.post(url, json={"external_ids": ["cat", "nobody", "ghost"]})
    assert r.status_code == 422
    assert [e["path"] for e in r.json()["errors"]] == ["/external_ids/1", "/external_ids/2"]
    assert members(tenant, list_id) == ["ann", "bob"]  # cat was not added either
    r = tenant.secret.request("DELETE", url, json={"external_ids": ["bob", "nobody"]})
    assert r.status_code == 204, r.text
    assert members(tenant, list_id) == ["ann"]
    # a deleted user leaves its lists
    assert tenant.secret.delete("/api/client/users/ann").status_code == 204
    assert members(tenant, list_id) == []
    assert tenant.secret.get(f"/api/client/lists/{list_id}").json()["users_count"] == 0


def test_a_failing_computation_says_why_and_when_it_is_tried_again(tenant: Tenant) -> None:
    seed(tenant)
    # a stored tree that no longer parses (as after an upgrade that checks trees more strictly)
    broken = '{"uuid": "r", "path": "$", "type": "wrapper", "group": "parent", "operator": "nand"}'
    row = db_call(
        tenant.server.database_url,
        lambda s: s.create_list(tenant.id, "Old", "dynamic", broken, now_ms()),
    )
    assert tenant.secret.get(f"/api/client/lists/{row.id}").json()["error"] is None
    assert tenant.secret.post(f"/api/client/lists/{row.id}/recount").status_code == 200
    for _ in range(500):
        body = tenant.secret.get(f"/api/client/lists/{row.id}").json()
        if body["error"] is not None:
            break
        time.sleep(0.02)
    assert body["state"] == "loading"  # still to be computed: it is tried again
    error = body["error"]
    assert error["failures"] == 1 and "unknown operator" in error["message"]
    failed, retry = (datetime.fromisoformat(error[k]) for k in ("failed_at", "retry_at"))
    assert retry - failed == timedelta(minutes=1)  # then 2, 4 ... 60 (docs/lists.md)
    shown = CliRunner().invoke(main, ["lists", "show", str(row.id), "--project", str(tenant.id),
                                      "--database-url", tenant.server.database_url])  # fmt: skip
    assert shown.exit_code == 0 and json.loads(shown.output)["error"] == error
    # a new rule is computed at once, and the error goes
    r = tenant.secret.patch(f"/api/client/lists/{row.id}", json={"rule": PRO})
    assert r.status_code == 200 and r.json()["error"] is None
    body = settled(tenant, row.id)
    assert (body["state"], body["users_count"], body["error"]) == ("draft", 2, None)


def test_static_changes_on_a_dynamic_list_are_a_409(tenant: Tenant) -> None:
    seed(tenant)
    list_id = create(tenant, {"name": "Pro", "type": "dynamic", "rule": PRO}).json()["id"]
    settled(tenant, list_id)
    url = f"/api/client/lists/{list_id}/users"
    assert tenant.secret.post(url, json={"external_ids": ["bob"]}).status_code == 409
    r = tenant.secret.request("DELETE", url, json={"external_ids": ["ann"]})
    assert r.status_code == 409
    assert members(tenant, list_id) == ["ann", "cat"]


def test_a_bad_tree_is_a_422_with_a_pointer_per_problem_and_creates_nothing(
    tenant: Tenant,
) -> None:
    bad = tree(
        {"uuid": "a", "type": "string", "group": "user", "path": "$.plan", "operator": "~"},
        {"uuid": "b", "type": "number", "group": "user", "path": "$.n", "operator": ">",
         "value": "abc", "colour": 1},
    )  # fmt: skip
    r = create(tenant, {"name": "Bad", "type": "dynamic", "rule": bad})
    assert r.status_code == 422, r.text
    paths = {e["path"] for e in r.json()["errors"]}
    assert {"/rule/children/0/operator", "/rule/children/1/colour"} <= paths
    for body, where in (
        ({"name": "", "type": "dynamic", "rule": PRO}, "/name"),
        ({"name": "x", "type": "smart"}, "/type"),
        ({"name": "x", "type": "dynamic"}, "/rule"),
        ({"name": "x", "type": "static", "rule": PRO}, "/rule"),
        ({"name": "x", "type": "static", "owner": 1}, "/owner"),
    ):
        r = create(tenant, body)
        assert r.status_code == 422 and r.json()["errors"][0]["path"] == where, (body, r.text)
    assert create(tenant, [1]).status_code == 422  # type: ignore[arg-type]
    assert tenant.secret.get("/api/client/lists").json()["results"] == []
    # and on PATCH: the list is unchanged
    list_id = create(tenant, {"name": "Pro", "type": "dynamic", "rule": PRO}).json()["id"]
    settled(tenant, list_id)
    r = tenant.secret.patch(f"/api/client/lists/{list_id}", json={"rule": bad, "name": "New"})
    assert r.status_code == 422
    body = tenant.secret.get(f"/api/client/lists/{list_id}").json()
    assert (body["name"], body["rule"]) == ("Pro", PRO)


def test_preview_counts_without_saving(tenant: Tenant) -> None:
    seed(tenant)
    r = tenant.secret.post("/api/client/lists/preview", json={"rule": PRO})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 2
    assert sorted(u["external_id"] for u in body["sample"]) == ["ann", "cat"]
    r = tenant.secret.post("/api/client/lists/preview", json={"rule": {"uuid": 1}})
    assert r.status_code == 422 and r.json()["errors"][0]["path"].startswith("/rule")
    assert tenant.secret.get("/api/client/lists").json()["results"] == []


def test_delete_and_unknown_lists(tenant: Tenant) -> None:
    seed(tenant)
    list_id = create(tenant, {"name": "Pro", "type": "dynamic", "rule": PRO}).json()["id"]
    settled(tenant, list_id)
    assert tenant.secret.delete(f"/api/client/lists/{list_id}").status_code == 204
    for method, path in (
        ("GET", f"/api/client/lists/{list_id}"),
        ("DELETE", f"/api/client/lists/{list_id}"),
        ("GET", f"/api/client/lists/{list_id}/users"),
        ("POST", f"/api/client/lists/{list_id}/recount"),
        ("GET", "/api/client/lists/abc"),
    ):
        assert tenant.secret.request(method, path).status_code == 404, (method, path)
    assert tenant.secret.get("/api/client/users/ann/lists").json()["results"] == []


def test_public_keys_get_403(tenant: Tenant) -> None:
    for method, path, body in (
        ("POST", "/api/client/lists", {"name": "x", "type": "static"}),
        ("GET", "/api/client/lists", None),
        ("POST", "/api/client/lists/preview", {"rule": PRO}),
        ("GET", "/api/client/lists/1", None),
        ("PATCH", "/api/client/lists/1", {"name": "y"}),
        ("DELETE", "/api/client/lists/1", None),
        ("POST", "/api/client/lists/1/recount", None),
        ("GET", "/api/client/lists/1/users", None),
        ("POST", "/api/client/lists/1/users", {"external_ids": ["a"]}),
        ("DELETE", "/api/client/lists/1/users", {"external_ids": ["a"]}),
        ("GET", "/api/client/users/a/lists", None),
    ):
        r = tenant.public.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
    assert tenant.secret.get("/api/client/lists").json()["results"] == []


def test_a_users_lists_take_an_id_holding_a_slash_and_ids_follow_the_field_rules(
    tenant: Tenant,
) -> None:
    """`%2F` is part of the id in /users/{ref}/lists (RawPathRoute), and an external id past
    the declared 255 characters is a 422 at its own path (api/fields.py)."""
    for ext in ("a/b", "a"):
        assert tenant.post("identify", {"external_id": ext}).status_code == 204
    r = create(tenant, {"name": "S", "type": "static"})
    url = f"/api/client/lists/{r.json()['id']}/users"
    assert tenant.secret.post(url, json={"external_ids": ["a/b"]}).status_code == 204
    r = tenant.secret.get("/api/client/users/a%2Fb/lists")
    assert r.status_code == 200, r.text
    assert [x["name"] for x in r.json()["results"]] == ["S"]
    assert tenant.secret.get("/api/client/users/a/lists").json()["results"] == []
    r = tenant.secret.post(url, json={"external_ids": ["a", "x" * 256]})
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert [e["path"] for e in errors] == ["/external_ids/1"]
    assert "at most 255 characters" in errors[0]["message"]
    assert tenant.secret.get("/api/client/users/a/lists").json()["results"] == []
