"""POST /api/client/events."""

from __future__ import annotations

from click.testing import CliRunner

from conftest import Tenant
from pier.cli import main


def test_events_are_stored_with_user_name_data_and_time(tenant: Tenant) -> None:
    r = tenant.post(
        "events",
        [
            {"name": "Purchased", "external_id": "e1", "data": {"price": 49.99}},
            {"name": "Viewed", "external_id": "e1"},
        ],
    )
    assert r.status_code == 204
    events = tenant.events("e1")
    assert [e["name"] for e in events] == ["Viewed", "Purchased", "user_updated", "user_created"]
    assert events[1]["data"] == {"price": 49.99}
    assert events[0]["data"] == {}
    assert events[0]["created_at"].endswith("Z")


def test_properties_is_another_name_for_data(tenant: Tenant) -> None:
    body = [
        {"name": "a", "external_id": "e1", "properties": {"screen": "Home"}},
        {"name": "b", "external_id": "e1", "properties": {"k": 1, "x": 1}, "data": {"k": 2}},
    ]
    assert tenant.post("events", body).status_code == 204
    data = {e["name"]: e["data"] for e in tenant.events("e1")}
    assert data["a"] == {"screen": "Home"}
    assert data["b"] == {"k": 2, "x": 1}


def test_user_object_is_applied_as_identify(tenant: Tenant) -> None:
    body = [
        {
            "name": "Signed up",
            "anonymous_id": "a1",
            "user": {"external_id": "e1", "email": "e1@example.com", "data": {"plan": "pro"}},
        }
    ]
    assert tenant.post("events", body).status_code == 204
    user = tenant.user("e1")
    assert user["email"] == "e1@example.com" and user["data"] == {"plan": "pro"}
    assert user["anonymous_ids"] == ["a1"]


def test_a_batch_is_all_or_nothing(tenant: Tenant) -> None:
    body = [{"name": "ok", "external_id": "e1"}, {"name": "", "external_id": "e2"}]
    r = tenant.post("events", body)
    assert r.status_code == 422
    assert r.json()["errors"] == [{"path": "/1/name", "message": "name must not be empty"}]
    assert tenant.counts() == {"users": 0, "user_anonymous_ids": 0, "devices": 0, "events": 0}


def test_between_1_and_1000_events(tenant: Tenant) -> None:
    assert tenant.post("events", []).status_code == 422
    many = [{"name": "x", "external_id": "e1"}] * 1001
    r = tenant.post("events", many)
    assert r.status_code == 422
    assert "1000" in r.json()["error"]
    assert tenant.post("events", many[:1000]).status_code == 204
    assert tenant.counts()["events"] == 1002  # 1000 + user_created and user_updated


def test_unknown_event_keys_are_ignored(tenant: Tenant) -> None:
    body = [{"name": "x", "external_id": "e1", "context": {"app": "y"}, "type": "track"}]
    assert tenant.post("events", body).status_code == 204


def test_text_plain_beacon_is_parsed_as_json(tenant: Tenant) -> None:
    r = tenant.public.post(
        "/api/client/events",
        content=b'[{"name": "Page Left", "anonymous_id": "a1"}]',
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert r.status_code == 204
    assert tenant.events("a1", by="anonymous_id")[0]["name"] == "Page Left"


def test_gzip_body_is_accepted(tenant: Tenant) -> None:
    import gzip
    import json

    raw = gzip.compress(json.dumps([{"name": "zipped", "external_id": "e1"}]).encode())
    r = tenant.public.post(
        "/api/client/events",
        content=raw,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 204, r.text
    assert tenant.events("e1")[0]["name"] == "zipped"


def test_data_is_stored_as_sent_and_must_be_an_object(tenant: Tenant) -> None:
    raw = b'[{"name": "a", "external_id": "raw1", "data": {"k" : [1, {"n": null}], "big": 1e308}}]'
    r = tenant.public.post("/api/client/events", content=raw)
    assert r.status_code == 204
    (event, _, _) = tenant.events("raw1")  # and user_updated, user_created
    assert event["data"]["k"] == [1, {"n": None}]
    assert event["data"]["big"] == 1e308
    r = tenant.public.post("/api/client/events", content=raw.replace(b"1e308", b"1e999"))
    assert r.status_code == 422  # beyond a double: refused (tests/faults/test_hostile_bodies.py)
    assert r.json()["errors"][0]["path"] == "/0/data/big"
    for bad in (b"[1]", b'"x"', b"3"):
        body = b'[{"name": "a", "external_id": "raw2", "data": ' + bad + b"}]"
        r = tenant.public.post("/api/client/events", content=body)
        assert r.status_code == 422 and r.json()["errors"][0]["path"] == "/0/data"
    r = tenant.secret.get("/api/client/users/raw2")  # refused bodies created no user
    assert r.status_code == 404, r.text


def test_numbers_in_data_come_back_spelled_as_sent_everywhere(tenant: Tenant) -> None:
    # PostgreSQL's jsonb would give back 1e+308, 0, 100000 and drop the exponent spellings;
    # 2^53 + 1 is exact only for a reader that keeps the text (a double rounds it)
    data = b'{"a": 1e308, "b": -0.0, "c": 1.0, "d": 9007199254740993, "e": 1E5, "f": [1.50]}'
    body = b'[{"name": "n", "external_id": "num1", "data": ' + data + b"}]"
    assert tenant.public.post("/api/client/events", content=body).status_code == 204

    r = tenant.secret.get("/api/client/users/num1/events")
    assert r.status_code == 200 and r.content.count(data) == 1, r.text
    r = tenant.secret.get("/api/client/events")
    assert r.status_code == 200 and r.content.count(data) == 1, r.text
    url = tenant.server.database_url
    result = CliRunner().invoke(
        main, ["export", "--project", str(tenant.id), "--database-url", url]
    )
    assert result.exit_code == 0 and result.stdout_bytes.count(data) == 1, result.output


def test_numbers_in_user_and_device_data_are_written_alike_on_every_backend(
    tenant: Tenant,
) -> None:
    # Identify data and device fields are decoded, merged and encoded again: the same spelling
    # on both backends (jsonb would turn 1e308 into 309 digits and -0.0 into 0).
    data = b'{"a": 1e308, "b": -0.0, "c": 1.0, "d": 9007199254740993, "e": 1E5}'
    body = b'{"external_id": "num2", "data": ' + data + b"}"
    assert tenant.public.post("/api/client/identify", content=body).status_code == 204
    device = (
        b'{"external_id": "num2", "device_id": "d1", "os": "iOS", "model": "m", "app_build": "1"'
    )
    body = device + b', "app_version": "1", "n": ' + data + b"}"
    assert tenant.public.post("/api/client/devices", content=body).status_code == 204
    written = b'{"a":1e308,"b":-0.0,"c":1.0,"d":9007199254740993,"e":100000.0}'
    r = tenant.secret.get("/api/client/users/num2")
    assert r.status_code == 200 and r.content.count(written) == 2, r.text


def test_data_that_is_not_utf8_is_refused(tenant: Tenant) -> None:
    body = b'[{"name": "a", "external_id": "utf1", "data": {"k": "\xff"}}]'
    r = tenant.public.post("/api/client/events", content=body)
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    assert tenant.counts()["events"] == 0


def test_a_body_that_is_not_utf8_is_400_on_every_endpoint(tenant: Tenant) -> None:
    for path in ("identify", "alias", "devices", "track", "segment"):
        r = tenant.public.post(f"/api/client/{path}", content=b'{"external_id": "\xff"}')
        assert r.status_code == 400, path
    assert tenant.counts()["users"] == 0
