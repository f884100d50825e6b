"""`/api/client/destinations...` on both backends: secret keys only (403 for public keys), bad
input 422 with JSON Pointers and nothing created, another project's destinations 404."""

from __future__ import annotations

from conftest import Tenant, make_tenant
from delivery.receiver import delivering, pause_afterwards, receiver, wait_for  # noqa: F401

BASE = "/api/client/destinations"


def test_public_keys_cannot_see_or_change_destinations(tenant: Tenant) -> None:
    new = {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}
    for method, path, body in (
        ("GET", BASE, None),
        ("POST", BASE, new),
        ("GET", f"{BASE}/1", None),
        ("POST", f"{BASE}/1/pause", None),
        ("DELETE", f"{BASE}/1", None),
    ):
        r = tenant.public.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
    assert tenant.secret.get(BASE).json() == {"results": []}
    assert tenant.public.request("GET", BASE, headers={"Authorization": ""}).status_code == 401


def test_bad_input_is_422_with_paths_and_creates_nothing(tenant: Tenant) -> None:
    r = tenant.secret.post(BASE, json={"kind": "fax", "url": "gopher://x", "only": ["[a"]})
    assert r.status_code == 422
    assert {e["path"] for e in r.json()["errors"]} == {"/kind", "/url", "/only"}
    r = tenant.secret.post(BASE, json={"kind": "pier", "url": "https://pier.example"})
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "/key"
    r = tenant.secret.post(
        BASE, json={"kind": "webhook", "url": "https://x.example", "batch_size": "9"}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["path"] == "/batch_size"
    r = tenant.secret.post(BASE, json={"kind": "webhook", "url": "https://x.example", "colour": 1})
    assert r.status_code == 422
    r = tenant.secret.post(BASE, content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert tenant.secret.get(BASE).json() == {"results": []}


def test_manage_a_destination(tenant: Tenant) -> None:
    assert tenant.post("events", [{"name": "poison", "external_id": "u"}]).status_code == 204
    refuse = {"on": True}

    def decide(got, n):  # type: ignore[no-untyped-def]
        return (400, {}, b"nope") if refuse["on"] and b'"poison"' in got.body else None

    with receiver(decide) as r:
        made = tenant.secret.post(BASE, json={"kind": "webhook", "url": r.url, "name": "h"})
        assert made.status_code == 201, made.text
        secret = made.json()["signing_secret"]
        assert secret.startswith("whsec_")
        did = made.json()["id"]
        shown = tenant.secret.get(f"{BASE}/{did}").json()
        assert (
            shown["signing_secret"] == secret[:8] + "…" and shown["lag_items"] == 3
        )  # user_created, user_updated, poison
        assert [d["id"] for d in tenant.secret.get(BASE).json()["results"]] == [did]
        with delivering(tenant.server.database_url):
            wait_for(lambda: tenant.secret.get(f"{BASE}/{did}").json()["lag_items"] == 0)
        letters = tenant.secret.get(f"{BASE}/{did}/dead-letters").json()["results"]
        assert len(letters) == 1 and letters[0]["answer"] == "400 nope"
        assert letters[0]["item"]["name"] == "poison"
        refuse["on"] = False
        r2 = tenant.secret.post(f"{BASE}/{did}/redeliver", json={"dead_letter": letters[0]["id"]})
        assert r2.json()["results"][0]["delivered"] is True
        assert tenant.secret.get(f"{BASE}/{did}/dead-letters").json()["results"] == []
        assert tenant.secret.post(f"{BASE}/{did}/redeliver", json={}).status_code == 422
    assert tenant.secret.post(f"{BASE}/{did}/pause").json()["state"] == "paused"
    assert tenant.secret.post(f"{BASE}/{did}/resume").json()["state"] == "active"
    replayed = tenant.secret.post(f"{BASE}/{did}/replay", json={"from": "beginning"})
    assert replayed.json()["lag_items"] == 3 and replayed.json()["cursor"] is None
    bad = tenant.secret.post(f"{BASE}/{did}/replay", json={"from": "soon"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "/from"
    tenant.secret.post(f"{BASE}/{did}/pause")
    # another project's key does not see it
    other = make_tenant(tenant.server)
    try:
        assert other.secret.get(f"{BASE}/{did}").status_code == 404
        assert other.secret.delete(f"{BASE}/{did}").status_code == 404
    finally:
        other.public.close()
        other.secret.close()
    assert tenant.secret.delete(f"{BASE}/{did}").status_code == 204
    assert tenant.secret.get(f"{BASE}/{did}").status_code == 404


def test_default_batch_size_by_kind(tenant: Tenant) -> None:
    """A webhook batches 2,000 items unless told otherwise (one POST a batch: a larger batch
    spreads its cost); the Client API and Segment kinds keep 500."""
    hook = tenant.secret.post(BASE, json={"kind": "webhook", "url": "https://x.example"})
    assert hook.status_code == 201 and hook.json()["batch_size"] == 2000
    told = {"kind": "webhook", "url": "https://x.example", "batch_size": 30}
    assert tenant.secret.post(BASE, json=told).json()["batch_size"] == 30
    for kind in ("parcelvoy", "segment"):
        made = tenant.secret.post(BASE, json={"kind": kind, "url": "https://x.example", "key": "k"})
        assert made.status_code == 201 and made.json()["batch_size"] == 500, made.text
