"""An id may hold any character the API accepts, a newline included: a user created with one
can be read and deleted by it (the path parameter matches across lines)."""

from __future__ import annotations

from urllib.parse import quote

from conftest import Tenant


def test_an_id_with_a_newline_can_be_read_and_deleted(tenant: Tenant) -> None:
    ref = "line one\nline two"
    assert (
        tenant.post("identify", {"external_id": ref, "email": "n@example.com"}).status_code == 204
    )
    path = f"/api/client/users/{quote(ref, safe='')}"
    r = tenant.secret.get(path)
    assert r.status_code == 200, r.text
    assert r.json()["external_id"] == ref
    assert tenant.secret.get(path + "/events").status_code == 200
    assert tenant.secret.delete(path).status_code == 204
    assert tenant.secret.get(path).status_code == 404
