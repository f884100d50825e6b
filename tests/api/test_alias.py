"""POST /api/client/alias."""

from __future__ import annotations

from conftest import Tenant


def alias(t: Tenant, anon: str, ext: str) -> int:
    return t.post("alias", {"anonymous_id": anon, "external_id": ext}).status_code


def test_alias_links_an_anonymous_user(tenant: Tenant) -> None:
    tenant.post("events", [{"name": "Opened", "anonymous_id": "a1"}])
    assert alias(tenant, "a1", "e1") == 204
    user = tenant.user("e1")
    assert user["anonymous_ids"] == ["a1"]
    assert tenant.counts()["users"] == 1


def test_alias_before_the_anonymous_user_exists_still_links(tenant: Tenant) -> None:
    assert alias(tenant, "a1", "e1") == 204
    assert tenant.user("a1", by="anonymous_id")["external_id"] == "e1"
    tenant.post("events", [{"name": "Opened", "anonymous_id": "a1"}])
    assert "Opened" in [e["name"] for e in tenant.events("e1")]


def test_repeating_an_alias_is_a_no_op(tenant: Tenant) -> None:
    assert alias(tenant, "a1", "e1") == 204
    before = tenant.counts()
    assert alias(tenant, "a1", "e1") == 204
    assert tenant.counts() == before


def test_realias_to_another_external_id_is_refused(tenant: Tenant) -> None:
    assert alias(tenant, "a1", "e1") == 204
    before = tenant.counts()
    r = tenant.post("alias", {"anonymous_id": "a1", "external_id": "e2"})
    assert r.status_code == 422
    assert r.json()["error"] == "anonymous_id a1 is already aliased to another external_id"
    assert r.json()["errors"][0]["path"] == "/anonymous_id"
    assert tenant.counts() == before
    assert tenant.user("a1", by="anonymous_id")["external_id"] == "e1"


def test_alias_merges_anonymous_user_into_existing_identified_user(tenant: Tenant) -> None:
    tenant.post("identify", {"external_id": "e1", "anonymous_id": "a0"})
    tenant.post("events", [{"name": "Browsed", "anonymous_id": "a1"}])
    assert alias(tenant, "a1", "e1") == 204
    user = tenant.user("e1")
    assert user["anonymous_ids"] == ["a0", "a1"]
    assert "Browsed" in [e["name"] for e in tenant.events("e1")]
    assert tenant.counts()["users"] == 1


def test_alias_requires_both_ids(tenant: Tenant) -> None:
    r = tenant.post("alias", {"anonymous_id": "", "external_id": None, "extra": 1})
    assert r.status_code == 422
    paths = [e["path"] for e in r.json()["errors"]]
    assert paths == ["/anonymous_id", "/external_id"]
    assert tenant.counts()["users"] == 0
