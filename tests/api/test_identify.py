"""POST /api/client/identify: the patch rules of contract section 4."""

from __future__ import annotations

from conftest import Tenant


def ok(t: Tenant, **body: object) -> None:
    r = t.post("identify", body)
    assert r.status_code == 204, r.text


def test_null_clears_and_omitted_keeps(tenant: Tenant) -> None:
    ok(tenant, external_id="e1", email="a@example.com", locale="en", phone="+33612345678")
    ok(tenant, external_id="e1", email=None)
    user = tenant.user("e1")
    assert user["email"] is None
    assert user["locale"] == "en"
    assert user["phone"] == "+33612345678"


def test_data_is_merged_one_level_deep(tenant: Tenant) -> None:
    ok(tenant, external_id="e1", data={"a": 1, "nested": {"x": 1, "y": 2}, "list": [1, 2]})
    ok(tenant, external_id="e1", data={"b": 2, "nested": {"x": 9}, "list": [3]})
    assert tenant.user("e1")["data"] == {"a": 1, "b": 2, "nested": {"x": 9}, "list": [3]}
    ok(tenant, external_id="e1", data=None)
    assert tenant.user("e1")["data"]["a"] == 1


def test_timezone_is_stored_canonically(tenant: Tenant) -> None:
    ok(tenant, external_id="e1", timezone="america/chicago")
    assert tenant.user("e1")["timezone"] == "America/Chicago"
    ok(tenant, external_id="e1", timezone="utc")
    assert tenant.user("e1")["timezone"] == "UTC"


def test_invalid_timezone_is_rejected_with_parcelvoy_message(tenant: Tenant) -> None:
    r = tenant.post("identify", {"external_id": "e1", "timezone": "Mars/Olympus"})
    assert r.status_code == 422
    assert r.json()["error"] == "The timezone value must be in the IANA format."
    assert r.json()["errors"] == [
        {"path": "/timezone", "message": "The timezone value must be in the IANA format."}
    ]
    assert tenant.counts()["users"] == 0


def test_phone_metadata_does_not_wipe_data(tenant: Tenant) -> None:
    ok(tenant, external_id="e1", data={"plan": "pro"})
    ok(tenant, external_id="e1", phone="+14155552671")
    data = tenant.user("e1")["data"]
    assert data == {"plan": "pro", "phone_country": "US", "phone_is_valid": True}
    ok(tenant, external_id="e1", phone="+1 000")
    data = tenant.user("e1")["data"]
    assert data["phone_country"] == "US" and data["phone_is_valid"] is False
    ok(tenant, external_id="e1", phone="not a number")
    assert tenant.user("e1")["data"] == {"plan": "pro"}
    ok(tenant, external_id="e1", phone="+447911123456")
    ok(tenant, external_id="e1", phone=None)
    user = tenant.user("e1")
    assert user["phone"] is None and user["data"] == {"plan": "pro"}


def test_unknown_top_level_keys_are_rejected(tenant: Tenant) -> None:
    r = tenant.post("identify", {"external_id": "e1", "first_name": "Ann"})
    assert r.status_code == 422
    assert r.json()["errors"] == [{"path": "/first_name", "message": "unknown field 'first_name'"}]
    assert tenant.counts()["users"] == 0


def test_updated_at_moves_and_created_at_stays(tenant: Tenant) -> None:
    ok(tenant, external_id="e1")
    first = tenant.user("e1")
    ok(tenant, external_id="e1", locale="fr")
    second = tenant.user("e1")
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] >= first["updated_at"]
    assert second["created_at"].endswith("Z") and len(second["created_at"]) == 24
