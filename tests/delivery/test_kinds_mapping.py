"""What each kind sends for the items of the complete change feed (user_updated,
device_registered, user_deleted: contract section 1), item by item. The end-to-end tests
(test_pier_kinds.py) cover the items the feed holds today over real HTTP; these check the
mapping of every name, on the calls the kinds build."""

from __future__ import annotations

import base64

import msgspec

from pier.delivery import kinds
from pier.store.base import FeedEvent
from pier.store.destinations import Destination


def item(
    n: int, name: str, data: object, ext: str | None = "u-1", anon: str | None = "a-1"
) -> FeedEvent:
    raw = msgspec.Raw(msgspec.json.encode(data))
    return FeedEvent(n, name, raw, 1_790_000_000_000 + n, 1_790_000_000_500, None, 7, ext, anon)


def dest(kind: str, **kw: object) -> Destination:
    return Destination(id=4, project_id=1, kind=kind, name=None, url="http://t.example", **kw)  # type: ignore[arg-type]


UPDATED = item(
    1,
    "user_updated",
    {
        "email": "new@x.io",
        "phone": None,
        "data": {"plan": "pro", "old": None, "phone_country": "US"},
        "anonymous_ids_added": ["a-2"],
    },
)
DEVICE = item(
    2,
    "device_registered",
    {
        "device_id": "d1",
        "token": "t1",
        "os": "iOS",
        "os_version": "17",
        "model": "iPhone",
        "app_build": "3",
        "app_version": "1.2",
        "extra": {"sdk_version": "9"},
    },
)
DELETED = item(
    3,
    "user_deleted",
    {"external_id": "u/1", "anonymous_ids": ["a-1"], "device_ids": ["d9"]},
    ext=None,
    anon=None,
)
EVENT = item(4, "Order Paid", {"total": 3})


def bodies(calls: list[kinds.Call]) -> list[tuple[str, str, object]]:
    return [
        (c.method, c.url.split("t.example", 1)[1], msgspec.json.decode(c.body) if c.body else None)
        for c in calls
    ]


def test_pier_reproduces_every_item_with_idempotency_keys() -> None:
    d = dest("pier", key="pk_t", secret_key="sk_t")
    calls = kinds.calls(d, [UPDATED, DEVICE, DELETED, EVENT], "4-1-4")
    assert bodies(calls) == [
        (
            "POST",
            "/api/client/identify",
            {
                "external_id": "u-1",
                "anonymous_id": "a-1",
                "email": "new@x.io",
                "phone": None,
                "data": {"plan": "pro", "old": None},
            },
        ),
        ("POST", "/api/client/alias", {"anonymous_id": "a-2", "external_id": "u-1"}),
        (
            "POST",
            "/api/client/devices?extra=replace",  # the device's whole extra
            {
                "external_id": "u-1",
                "anonymous_id": "a-1",
                "device_id": "d1",
                "token": "t1",
                "os": "iOS",
                "os_version": "17",
                "model": "iPhone",
                "app_build": "3",
                "app_version": "1.2",
                "sdk_version": "9",
            },
        ),
        # the tombstone's device goes with the user at the target, wherever it is there
        (
            "POST",
            "/api/client/devices",
            {
                "external_id": "u/1",
                "device_id": "d9",
                "os": "-",
                "model": "-",
                "app_build": "-",
                "app_version": "-",
            },
        ),
        ("DELETE", "/api/client/users/u%2F1?by=external_id", None),
        # a user merged into it that the target still holds apart
        ("DELETE", "/api/client/users/a-1?by=anonymous_id", None),
        (
            "POST",
            "/api/client/events",
            [
                {
                    "name": "Order Paid",
                    "external_id": "u-1",
                    "anonymous_id": "a-1",
                    "data": {"total": 3},
                    "timestamp": 1_790_000_000_004,
                }
            ],
        ),
    ]
    assert calls[4].headers["Authorization"] == calls[5].headers["Authorization"] == "Bearer sk_t"
    keys = [c.headers.get("Idempotency-Key") for c in calls if c.method == "POST"]
    assert all(keys) and len(set(keys)) == len(keys)
    again = kinds.calls(d, [UPDATED, DEVICE, DELETED, EVENT], "4-1-4")
    assert [c.headers.get("Idempotency-Key") for c in again if c.method == "POST"] == keys


def test_pier_without_the_target_secret_key_skips_deletions() -> None:
    assert kinds.calls(dest("pier", key="pk_t"), [DELETED, REMOVED], "b") == []


REMOVED = item(5, "device_removed", {"device_id": "d/1", "reason": "device_cap"})


def test_pier_removes_a_device_removed_whoever_holds_it_at_the_target() -> None:
    d = dest("pier", key="pk_t", secret_key="sk_t")
    calls = kinds.calls(d, [EVENT, REMOVED, EVENT], "b")
    assert [(m, path) for m, path, _ in bodies(calls)] == [
        ("POST", "/api/client/events"),
        ("DELETE", "/api/client/devices/d%2F1"),  # in order: before the next events
        ("POST", "/api/client/events"),
    ]
    assert calls[1].headers["Authorization"] == "Bearer sk_t"
    key = calls[1].headers["Idempotency-Key"]  # a retried batch does not remove it again
    assert key == kinds.calls(d, [REMOVED], "c")[0].headers["Idempotency-Key"]
    for kind in ("parcelvoy", "segment"):  # their targets apply their own limits
        assert kinds.calls(dest(kind, key="k"), [REMOVED], "b") == [], kind


def test_parcelvoy_sends_only_what_parcelvoy_accepts() -> None:
    calls = kinds.calls(dest("parcelvoy", key="pk_p"), [UPDATED, DEVICE, DELETED, EVENT], "b")
    sent = bodies(calls)
    assert [s[1] for s in sent] == [
        "/api/client/identify",
        "/api/client/alias",
        "/api/client/devices",
        "/api/client/events",
    ]
    assert "sdk_version" not in sent[2][2]  # type: ignore[operator]
    assert sent[3][2] == [
        {"name": "Order Paid", "external_id": "u-1", "anonymous_id": "a-1", "data": {"total": 3}}
    ]
    assert all("Idempotency-Key" not in c.headers for c in calls)


def test_segment_maps_updates_to_identify_and_alias() -> None:
    (call,) = kinds.calls(dest("segment", key="wk"), [UPDATED, DEVICE, DELETED, EVENT], "b")
    assert call.url == "http://t.example/v1/batch"
    assert call.headers["Authorization"] == "Basic " + base64.b64encode(b"wk:").decode()
    batch = msgspec.json.decode(call.body)["batch"]  # type: ignore[arg-type]
    assert [c["type"] for c in batch] == ["identify", "alias", "track"]
    assert batch[0]["traits"] == {"email": "new@x.io", "phone": None, "plan": "pro", "old": None}
    assert batch[1]["previousId"] == "a-2" and batch[1]["userId"] == "u-1"
    assert batch[2]["messageId"] == "pier-4-4" and batch[2]["properties"] == {"total": 3}
    assert len({c["messageId"] for c in batch}) == 3


def test_webhook_sends_every_item_as_the_feed_gives_it() -> None:
    (call,) = kinds.calls(dest("webhook", signing_secret="whsec_x"), [UPDATED, DELETED], "4-1-3")
    body = msgspec.json.decode(call.body)  # type: ignore[arg-type]
    assert body["destination"] == 4 and [i["name"] for i in body["items"]] == [
        "user_updated",
        "user_deleted",
    ]
    assert call.headers["Pier-Batch"] == "4-1-3"


def test_a_key_is_shown_by_a_prefix_of_at_most_a_quarter_of_it() -> None:
    from pier.delivery.secrets import prefix

    assert prefix("whsec_" + "x" * 43) == "whsec_xx…"
    assert prefix("pk_target_key_value") == "pk_t…"
    assert prefix("wk") == "…" and prefix(None) is None


def test_engine_pacing_from_the_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The delivery settings reach the engine from their variables; a bad one is refused,
    naming its option, before anything runs."""
    from click.testing import CliRunner

    from pier.cli import main
    from pier.delivery.pacing import Pacing
    from pier.settings import Settings

    s = Pacing.of(Settings(delivery_backoff_cap=2.5, delivery_answer_limit=1024, secret_key="k"))
    assert s.backoff_cap == 2.5 and s.answer_limit == 1024 and s.backoff_base == 1.0
    assert s.sealing == "k"
    monkeypatch.setenv("PIER_DELIVERY_TIMEOUT", "soon")
    result = CliRunner().invoke(main, ["deliver"])
    assert result.exit_code == 2 and "--delivery-timeout" in result.output, result.output
    monkeypatch.setenv("PIER_DELIVERY_TIMEOUT", "0")
    result = CliRunner().invoke(main, ["deliver"])
    assert result.exit_code == 2 and "--delivery-timeout" in result.output, result.output
