"""Retries are safe: Idempotency-Key on any POST, message_id on events; event time."""

from __future__ import annotations

import asyncio
import time

import httpx

from conftest import Tenant

EVENTS = [{"name": "Paid", "external_id": "e1", "data": {"amount": 5}}]


def test_repeat_with_idempotency_key_writes_nothing(tenant: Tenant) -> None:
    headers = {"Idempotency-Key": "req-1"}
    assert tenant.post("events", EVENTS, headers=headers).status_code == 204
    before = tenant.counts()
    for _ in range(3):
        assert tenant.post("events", EVENTS, headers=headers).status_code == 204
    assert tenant.counts() == before
    assert tenant.post("events", EVENTS, headers={"Idempotency-Key": "req-2"}).status_code == 204
    assert tenant.counts()["events"] == before["events"] + 1


def test_same_key_with_another_request_is_409(tenant: Tenant) -> None:
    headers = {"Idempotency-Key": "req-1"}
    assert tenant.post("identify", {"external_id": "e1"}, headers=headers).status_code == 204
    r = tenant.post("identify", {"external_id": "e2"}, headers=headers)
    assert r.status_code == 409
    assert "req-1" in r.json()["error"]
    assert tenant.secret.get("/api/client/users/e2").status_code == 404


def test_same_key_and_body_with_another_query_is_409(tenant: Tenant) -> None:
    """?extra=replace asks for another change than the same body alone."""
    device = {"external_id": "e1", "device_id": "d1", "os": "iOS", "model": "m"}
    device |= {"app_build": "1", "app_version": "1"}
    headers = {"Idempotency-Key": "req-1"}
    assert tenant.post("devices", device | {"a": 1}).status_code == 204
    assert tenant.post("devices", device, headers=headers).status_code == 204
    r = tenant.post("devices", device, headers=headers, params={"extra": "replace"})
    assert r.status_code == 409, r.text
    assert tenant.user("e1")["devices"][0]["extra"] == {"a": 1}


def test_a_refused_request_does_not_use_up_its_key(tenant: Tenant) -> None:
    tenant.post("alias", {"anonymous_id": "a", "external_id": "e1"})
    headers = {"Idempotency-Key": "k"}
    bad = {"anonymous_id": "a", "external_id": "e2"}
    assert tenant.post("alias", bad, headers=headers).status_code == 422
    assert tenant.post("alias", bad, headers=headers).status_code == 422


def test_racing_repeats_are_stored_once(tenant: Tenant) -> None:
    async def main() -> list[int]:
        headers = {"Authorization": f"Bearer {tenant.public_key}", "Idempotency-Key": "race"}
        async with httpx.AsyncClient(base_url=tenant.server.url, headers=headers) as client:
            calls = [client.post("/api/client/events", json=EVENTS) for _ in range(20)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert asyncio.run(main()) == [204] * 20
    assert [e["name"] for e in tenant.events("e1")].count("Paid") == 1


def test_message_id_is_stored_once(tenant: Tenant) -> None:
    event = {"name": "Paid", "external_id": "e1", "message_id": "m-1"}
    assert tenant.post("events", [event, event]).status_code == 204
    assert tenant.post("events", [event]).status_code == 204
    events = [e for e in tenant.events("e1") if e["name"] == "Paid"]
    assert len(events) == 1 and events[0]["message_id"] == "m-1"


def test_timestamp_becomes_created_at_and_received_at_is_kept(tenant: Tenant) -> None:
    body = [
        {"name": "iso", "external_id": "e1", "timestamp": "2026-01-02T03:04:05.678+01:00"},
        {"name": "ms", "external_id": "e1", "timestamp": 1767225600000},
    ]
    assert tenant.post("events", body).status_code == 204
    events = {e["name"]: e for e in tenant.events("e1")}
    assert events["iso"]["created_at"] == "2026-01-02T02:04:05.678Z"
    assert events["ms"]["created_at"] == "2026-01-01T00:00:00.000Z"
    assert events["iso"]["received_at"] > events["iso"]["created_at"]


def test_sent_at_corrects_client_clock_skew(tenant: Tenant) -> None:
    now = int(time.time() * 1000)
    skewed = now + 3_600_000  # the client's clock is an hour fast
    body = [{"name": "x", "external_id": "e1", "timestamp": skewed - 60_000}]
    r = tenant.post("events", body, headers={"X-Sent-At": str(skewed)})
    assert r.status_code == 204
    event = tenant.events("e1")[0]
    created = time.mktime(time.strptime(event["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    received = time.mktime(time.strptime(event["received_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 55 <= received - created <= 65  # a minute before it was received


def test_times_out_of_range_are_422(tenant: Tenant) -> None:
    future = int(time.time() * 1000) + 2 * 86_400_000
    for ts in (future, "1999-12-31T23:59:59Z", "2026-01-01T00:00:00", "yesterday", True):
        r = tenant.post("events", [{"name": "x", "external_id": "e1", "timestamp": ts}])
        assert r.status_code == 422, ts
        assert r.json()["errors"][0]["path"] == "/0/timestamp"
    assert tenant.counts()["events"] == 0
