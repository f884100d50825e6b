"""The read API (contract section 5)."""

from __future__ import annotations

from conftest import Tenant


def test_events_pages_newest_first_with_cursor(tenant: Tenant) -> None:
    body = [{"name": f"e{i}", "external_id": "u1"} for i in range(60)]
    assert tenant.post("events", body).status_code == 204
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 25, **({"cursor": cursor} if cursor else {})}
        r = tenant.secret.get("/api/client/users/u1/events", params=params)
        assert r.status_code == 200
        page = r.json()
        seen += [e["name"] for e in page["results"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"e{i}" for i in reversed(range(60))] + ["user_updated", "user_created"]


def test_default_limit_is_25_and_max_1000(tenant: Tenant) -> None:
    tenant.post("events", [{"name": "x", "external_id": "u1"}] * 30)
    r = tenant.secret.get("/api/client/users/u1/events")
    assert len(r.json()["results"]) == 25
    for bad in ("0", "1001", "abc"):
        r = tenant.secret.get("/api/client/users/u1/events", params={"limit": bad})
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == "/limit"
    r = tenant.secret.get("/api/client/users/u1/events", params={"cursor": "garbage"})
    assert r.status_code == 422


def test_user_by_anonymous_id_and_unknown_user(tenant: Tenant) -> None:
    tenant.post("identify", {"anonymous_id": "a1", "external_id": "e1"})
    assert tenant.user("a1", by="anonymous_id")["external_id"] == "e1"
    r = tenant.secret.get("/api/client/users/nobody")
    assert r.status_code == 404 and r.json()["status"] == "error"
    r = tenant.secret.get("/api/client/users/nobody/events")
    assert r.status_code == 404
    by = [{"path": "/by", "message": "by must be external_id or anonymous_id"}]
    r = tenant.secret.get("/api/client/users/e1", params={"by": "email"})
    assert r.status_code == 422 and r.json()["errors"] == by
    r = tenant.secret.delete("/api/client/users/e1", params={"by": "email"})
    assert r.status_code == 422 and r.json()["errors"] == by
    assert tenant.user("e1")["external_id"] == "e1"  # not deleted


def test_user_fields(tenant: Tenant) -> None:
    tenant.post("identify", {"anonymous_id": "a1", "external_id": "e1", "locale": "en"})
    user = tenant.user("e1")
    assert set(user) == {
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
    event = tenant.events("e1")[0]
    assert {"id", "name", "data", "created_at"} <= set(event)


def test_ids_with_a_line_break_can_be_read(tenant: Tenant) -> None:
    tenant.post("identify", {"external_id": "two\nlines", "anonymous_id": "a\r\nb"})
    assert tenant.user("two%0Alines")["anonymous_ids"] == ["a\r\nb"]
    assert tenant.user("a%0D%0Ab", by="anonymous_id")["external_id"] == "two\nlines"
    assert tenant.secret.get("/api/client/users/two%0Alines/devices").status_code == 200


def test_ids_with_a_slash_can_be_read_and_deleted(tenant: Tenant) -> None:
    tenant.post("identify", {"external_id": "team/a", "anonymous_id": "x/y"})
    assert tenant.user("team%2Fa")["external_id"] == "team/a"
    assert tenant.events("team%2Fa")[-1]["name"] == "user_created"
    assert tenant.user("x%2Fy", by="anonymous_id")["external_id"] == "team/a"
    r = tenant.secret.get("/api/client/users/team%2Fa/devices")
    assert (r.status_code, r.json()) == (200, {"results": []}), r.text
    assert tenant.secret.delete("/api/client/users/team%2Fa").status_code == 204
    assert tenant.secret.get("/api/client/users/team%2Fa").status_code == 404
