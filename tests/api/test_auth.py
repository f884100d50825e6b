"""Keys (contract section 1)."""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import Tenant, db_call
from pier.clock import now_ms
from pier.domain.keys import hash_key

BODY = [{"name": "x", "external_id": "e1"}]


def post(t: Tenant, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{t.server.url}/api/client/events", json=BODY, headers=headers)


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "Missing Authorization header"),
        ({"Authorization": "Basic abc"}, "Bearer scheme"),
        ({"Authorization": "Bearer"}, "carries no key"),
        ({"Authorization": "Bearer pk_00000000000000000000000000000000"}, "Unknown API key"),
        ({"Authorization": "Bearer garbled!!"}, "Unknown API key"),
    ],
)
def test_bad_keys_are_401(tenant: Tenant, headers: dict[str, str], message: str) -> None:
    r = post(tenant, headers)
    assert r.status_code == 401
    body = r.json()
    assert body["status"] == "error" and body["code"] == 1000
    assert message in body["error"]
    assert tenant.counts()["events"] == 0


def test_scheme_is_case_insensitive(tenant: Tenant) -> None:
    assert post(tenant, {"Authorization": f"bearer {tenant.public_key}"}).status_code == 204


def test_public_key_on_read_route_is_403(tenant: Tenant) -> None:
    r = tenant.public.get("/api/client/users/e1")
    assert r.status_code == 403
    assert r.json() == {"status": "error", "error": "Access denied.", "code": 1007}


def test_secret_key_may_ingest(tenant: Tenant) -> None:
    assert tenant.secret.post("/api/client/events", json=BODY).status_code == 204


def test_revoked_key_is_refused_within_5_seconds(tenant: Tenant) -> None:
    assert post(tenant, {"Authorization": f"Bearer {tenant.public_key}"}).status_code == 204
    db_call(
        tenant.server.database_url,
        lambda s: s.revoke_key(None, hash_key(tenant.public_key), now_ms()),
    )
    deadline = time.monotonic() + 5
    while True:
        r = post(tenant, {"Authorization": f"Bearer {tenant.public_key}"})
        if r.status_code == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]


def test_secret_keys_are_stored_hashed(tenant: Tenant) -> None:
    keys = db_call(tenant.server.database_url, lambda s: s.list_keys(tenant.id))
    by_scope = {k.scope: k for k in keys}
    assert by_scope["secret"].value is None
    assert by_scope["public"].value == tenant.public_key
    found = db_call(tenant.server.database_url, lambda s: s.find_key(hash_key(tenant.secret_key)))
    assert found is not None and found.scope == "secret"


def test_key_format() -> None:
    from pier.domain.keys import generate_key

    key = generate_key("public")
    assert key.startswith("pk_") and len(key) == 35
    int(key[3:], 16)
    assert generate_key("secret").startswith("sk_")


def test_projects_are_isolated(tenant: Tenant) -> None:
    from conftest import make_tenant

    other = make_tenant(tenant.server)
    assert (
        other.post("identify", {"external_id": "e1", "email": "other@example.com"}).status_code
        == 204
    )
    assert tenant.secret.get("/api/client/users/e1").status_code == 404
    assert tenant.post("identify", {"external_id": "e1"}).status_code == 204
    assert tenant.user("e1")["email"] is None
    assert other.user("e1")["email"] == "other@example.com"
