"""Every request of tests/fixtures/sdk-wire.json (bodies exactly as the Parcelvoy iOS, Android and
web SDKs send them), replayed in order with a public key: each is accepted and leaves what its
`expect` says."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import msgspec

from conftest import Tenant

WIRE = json.loads((Path(__file__).parent.parent / "fixtures" / "sdk-wire.json").read_text())


def check_ios_event(t: Tenant) -> None:
    events = [e for e in t.events("ios-user-1") if e["name"] == "Product Purchased"]
    assert [e["data"] for e in events] == [{"product_id": 12345, "price": 49.99, "quantity": 4}]


def check_ios_token(t: Tenant) -> None:
    devices = t.user("ios-user-1")["devices"]
    token = "45d2e0c7bbb649679723a96d92d0fa305e356e6603aa4926a322d7f5c89"
    assert [(d["token"], d["app_build"]) for d in devices] == [(token, "466")]


def check_android_event(t: Tenant) -> None:
    events = [e for e in t.events("android-user-1") if e["name"] == "Screen Viewed"]
    assert [e["data"] for e in events] == [{"screen": "Home", "tab": 2}]


def check_android_device(t: Tenant) -> None:
    devices = t.user("android-user-1")["devices"]
    assert len(devices) == 1
    assert devices[0]["extra"] == {"sdk_version": "1.0.0"}
    assert devices[0]["os"] == "Android"


def check_token_moved(t: Tenant) -> None:
    assert t.user("android-user-1")["devices"] == []
    moved = t.user("android-user-2")["devices"]
    assert [d["token"] for d in moved] == ["fcm:APA91bHun4MxP5egoKMwt2KZFBaFUH"]


CHECKS: dict[str, Callable[[Tenant], None]] = {
    "event stored on ios-user-1 with its data": check_ios_event,
    "ios-user-1 still has one device carrying this token, now with app_build 466": check_ios_token,
    'event data on android-user-1 is {"screen": "Home", "tab": 2}': check_android_event,
    "device stored; sdk_version kept in the device's extra data": check_android_device,
    "the device now belongs to android-user-2 and no longer to android-user-1": check_token_moved,
}


def test_every_sdk_request_is_accepted_and_stored(tenant: Tenant) -> None:
    for step in WIRE["requests"]:
        headers = {**step["headers"], "Authorization": f"Bearer {tenant.public_key}"}
        r = tenant.public.request(
            step["method"], step["path"], content=msgspec.json.encode(step["body"]), headers=headers
        )
        assert r.status_code == 204, (step["step"], r.text)
        if "expect" in step:
            CHECKS[step["expect"]](tenant)
    # the identify calls arrived as sent
    ios = tenant.user("ios-user-1")
    assert ios["email"] == "ios@example.com" and ios["data"] == {"first_name": "Ann", "plan": "pro"}
    assert ios["anonymous_ids"] == ["6F9619FF-8B86-4011-B42D-00C04FC964FF"]
    android = tenant.user("android-user-1")
    assert android["email"] == "droid@example.com" and android["phone"] is None
    web = tenant.user("web-user-1")
    assert web["timezone"] == "America/Chicago" and web["locale"] == "en"
    beacon = tenant.events("0d5a3f3e-7e8b-4b59-9d9e-6f2d1d7b9c01", by="anonymous_id")
    assert beacon[0]["name"] == "Page Left" and beacon[0]["data"] == {"path": "/checkout"}


def test_every_expectation_has_a_check() -> None:
    expects = {s["expect"] for s in WIRE["requests"] if "expect" in s}
    assert expects == set(CHECKS)
