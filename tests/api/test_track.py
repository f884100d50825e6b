"""POST /api/client/track: one event as the Parcelvoy JS SDK's track() sends it (the wire shapes
are in tests/fixtures/segment-wire.json and replayed by test_segment.py); here the mapping, the
extras (properties, timestamp, message_id, X-Sent-At) and the 422s."""

from __future__ import annotations

import time
from datetime import datetime

import httpx

from conftest import Tenant


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def errors(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {e["path"]: e["message"] for e in r.json()["errors"]}


def test_the_sdk_shape_is_stored(tenant: Tenant) -> None:
    body = {"event": "Tapped Button", "anonymous_id": "tr-anon", "external_id": "tr-1"}
    r = tenant.post("track", {**body, "data": {"Key": "Value"}})
    assert r.status_code == 204 and r.content == b""
    [event] = [e for e in tenant.events("tr-1") if e["name"] == "Tapped Button"]
    assert event["data"] == {"Key": "Value"}
    assert tenant.user("tr-1")["anonymous_ids"] == ["tr-anon"]
    r = tenant.post("track", {"event": "No Data", "external_id": "tr-1"})  # data left out
    assert r.status_code == 204
    assert [e["data"] for e in tenant.events("tr-1") if e["name"] == "No Data"] == [{}]


def test_properties_timestamp_and_message_id(tenant: Tenant) -> None:
    body = {
        "event": "Merged",
        "external_id": "tr-2",
        "properties": {"a": 1, "b": 1},
        "data": {"b": 2},
        "timestamp": "2026-01-02T03:04:05.678Z",
        "message_id": "tr-msg-1",
        "unknown": "ignored",
    }
    assert tenant.post("track", body).status_code == 204
    assert tenant.post("track", body).status_code == 204  # a retry: stored once
    events = [e for e in tenant.events("tr-2") if e["name"] == "Merged"]
    assert len(events) == 1
    assert events[0]["data"] == {"a": 1, "b": 2}  # data wins
    assert events[0]["created_at"] == "2026-01-02T03:04:05.678Z"
    assert events[0]["message_id"] == "tr-msg-1"


def test_x_sent_at_corrects_the_clock(tenant: Tenant) -> None:
    now = int(time.time() * 1000)
    body = {"event": "Skewed", "external_id": "tr-3", "timestamp": now + 3_600_000 - 1000}
    r = tenant.post("track", body, headers={"X-Sent-At": str(now + 3_600_000)})
    assert r.status_code == 204, r.text
    [event] = [e for e in tenant.events("tr-3") if e["name"] == "Skewed"]
    assert abs(ms(event["created_at"]) - (now - 1000)) < 3000


def test_invalid_bodies_store_nothing(tenant: Tenant) -> None:
    before = tenant.counts()
    assert set(errors(tenant.post("track", {"external_id": "tr-4"}))) == {"/event"}
    assert set(errors(tenant.post("track", {"event": "", "external_id": "tr-4"}))) == {"/event"}
    assert set(errors(tenant.post("track", {"event": "E"}))) == {""}
    assert set(errors(tenant.post("track", {"event": "E", "external_id": None}))) == {""}
    found = errors(
        tenant.post(
            "track",
            {
                "event": "E" * 256,
                "external_id": 5,
                "anonymous_id": "a",
                "data": [],
                "properties": "x",
                "timestamp": "2026-01-02",
            },
        )
    )
    assert set(found) == {"/event", "/external_id", "/data", "/properties", "/timestamp"}
    assert set(errors(tenant.post("track", [{"event": "E", "external_id": "tr-4"}]))) == {""}
    assert tenant.counts() == before


def test_keys_and_methods(tenant: Tenant) -> None:
    with httpx.Client(base_url=tenant.server.url, timeout=30) as http:
        r = http.post("/api/client/track", json={"event": "E", "external_id": "tr-5"})
        assert r.status_code == 401
    assert tenant.public.get("/api/client/track").status_code == 405
