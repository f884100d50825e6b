"""Client against a real Pier server."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import msgspec
import pytest

from pier.client import CLEAR, Client, PierError


def test_identify_round_trip(client: Client, pier_server: Any, uid: str) -> None:
    client.identify(
        external_id=f"{uid}-u",
        anonymous_id=f"{uid}-a",
        email="ann@example.com",
        phone="+1 415 555 2671",
        timezone="america/chicago",
        locale="en-US",
        data={"plan": "pro", "seats": 3},
    )
    user = pier_server.user(f"{uid}-u")
    assert user["external_id"] == f"{uid}-u"
    assert f"{uid}-a" in user["anonymous_ids"]
    assert user["email"] == "ann@example.com"
    assert user["timezone"] == "America/Chicago"
    assert user["locale"] == "en-US"
    assert user["data"]["plan"] == "pro" and user["data"]["seats"] == 3


def test_identify_sends_only_given_fields(client: Client, pier_server: Any, uid: str) -> None:
    client.identify(external_id=uid, email="a@example.com", locale="fr")
    client.identify(external_id=uid, data={"k": 1})  # email and locale not sent: kept
    user = pier_server.user(uid)
    assert (user["email"], user["locale"], user["data"]["k"]) == ("a@example.com", "fr", 1)
    client.identify(external_id=uid, email=CLEAR)  # sent as null: cleared
    user = pier_server.user(uid)
    assert user["email"] is None and user["locale"] == "fr"


def test_identify_without_an_id_sends_nothing(client: Client, request_log: Any) -> None:
    with pytest.raises(ValueError):
        client.identify(email="nobody@example.com")
    assert request_log.count("/api/client/identify") == 0


def test_alias_round_trip(client: Client, pier_server: Any, uid: str) -> None:
    client.identify(anonymous_id=f"{uid}-a", data={"seen": True})
    client.alias(f"{uid}-a", f"{uid}-u")
    client.alias(f"{uid}-a", f"{uid}-u")  # repeating it is a no-op
    user = pier_server.user(f"{uid}-u")
    assert f"{uid}-a" in user["anonymous_ids"]
    assert user["data"]["seen"] is True


def test_register_device_round_trip(client: Client, pier_server: Any, uid: str) -> None:
    client.register_device(
        f"{uid}-d",
        "android",
        "Pixel 8",
        "42",
        "1.2.0",
        external_id=uid,
        token=f"{uid}-token",
        os_version="14",
        sdk_version="0.5.0",
    )
    (device,) = pier_server.user(uid)["devices"]
    assert device["device_id"] == f"{uid}-d"
    assert (device["os"], device["model"], device["app_build"]) == ("android", "Pixel 8", "42")
    assert (device["app_version"], device["os_version"]) == ("1.2.0", "14")
    assert device["token"] == f"{uid}-token"
    assert device["extra"]["sdk_version"] == "0.5.0"


def test_track_and_flush_store_every_event_once(client: Client, pier_server: Any, uid: str) -> None:
    for i in range(50):
        client.track("Clicked", external_id=uid, data={"i": i})
    client.flush()
    events = pier_server.events(uid, "Clicked")
    assert sorted(e["data"]["i"] for e in events) == list(range(50))


def test_track_timestamp_is_the_event_time(client: Client, pier_server: Any, uid: str) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    client.track("Old", external_id=uid, timestamp=when)
    client.flush()
    (event,) = pier_server.events(uid, "Old")
    assert event["created_at"] == "2024-01-02T01:04:05.678Z"


def test_batching_sends_fewer_requests(
    make_client: Any, pier_server: Any, uid: str, request_log: Any
) -> None:
    client = make_client(max_batch=100, flush_interval=30)
    for i in range(250):
        client.track("Batched", external_id=uid, data={"i": i})
    client.flush()
    assert request_log.count("/api/client/events") == 3  # 100 + 100 + 50
    assert sorted(e["data"]["i"] for e in pier_server.events(uid, "Batched")) == list(range(250))


def test_flush_interval_sends_without_flush(make_client: Any, pier_server: Any, uid: str) -> None:
    client = make_client(flush_interval=0.2)
    for i in range(3):
        client.track("Timed", external_id=uid, data={"i": i})
    deadline = time.monotonic() + 10
    while len(pier_server.events(uid, "Timed")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(pier_server.events(uid, "Timed")) == 3


def test_validation_error_is_not_retried(client: Client, request_log: Any, uid: str) -> None:
    started = time.monotonic()
    with pytest.raises(PierError) as info:
        client.identify(external_id=uid, timezone="Not/AZone")
    assert time.monotonic() - started < 1
    assert info.value.status == 422
    assert info.value.error == "The timezone value must be in the IANA format."
    assert info.value.errors and info.value.errors[0]["path"] == "/timezone"
    assert request_log.count("/api/client/identify") == 1
    assert request_log.retries() == 0


def test_unknown_key_is_401_and_not_retried(make_client: Any, request_log: Any, uid: str) -> None:
    client = make_client(api_key="pk_" + "0" * 32)
    with pytest.raises(PierError) as info:
        client.alias(f"{uid}-a", uid)
    assert (info.value.status, info.value.code) == (401, 1000)
    assert request_log.retries() == 0


def test_rejected_event_is_reported_and_the_rest_delivered(
    make_client: Any, pier_server: Any, uid: str
) -> None:
    failed: list[tuple[BaseException, list[dict]]] = []
    client = make_client(on_error=lambda exc, events: failed.append((exc, events)))
    client.track("Good", external_id=uid, data={"i": 0})
    bad_id = client.track("Bad", external_id="x" * 300)  # over the server's 255 limit
    client.track("Good", external_id=uid, data={"i": 1})
    client.flush()
    ((exc, events),) = failed
    assert isinstance(exc, PierError) and exc.status == 422
    assert [e["message_id"] for e in events] == [bad_id]
    assert sorted(e["data"]["i"] for e in pier_server.events(uid, "Good")) == [0, 1]


def test_bodies_are_gzipped_and_accepted(client: Client, pier_server: Any, uid: str) -> None:
    sent: list[httpx.Request] = []
    client._sender.http.event_hooks["request"].append(sent.append)
    blob = "pier " * 40_000  # 200 kB, compresses well
    client.identify(external_id=uid, data={"blob": blob})
    client.track("Big", external_id=uid, data={"blob": blob})
    client.flush()
    assert pier_server.user(uid)["data"]["blob"] == blob
    assert pier_server.events(uid, "Big")[0]["data"]["blob"] == blob
    assert sent, "the hook saw no request"
    for request in sent:
        assert request.headers["Content-Encoding"] == "gzip"
        assert request.headers["Content-Type"] == "application/json"
        assert len(request.content) < 10_000
        msgspec.json.decode(gzip.decompress(request.content))


def test_context_manager_flushes(pier_server: Any, uid: str) -> None:
    with Client(pier_server.public_key, pier_server.url, flush_interval=30) as client:
        for i in range(10):
            client.track("Ctx", external_id=uid, data={"i": i})
    assert len(pier_server.events(uid, "Ctx")) == 10


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_events_are_sent_at_interpreter_exit(pier_server: Any, uid: str, kind: str) -> None:
    """A client that is never closed still delivers its queue when the program ends."""
    script = {
        "sync": """
            from pier.client import Client
            client = Client(KEY, URL, flush_interval=30)
            for i in range(20):
                client.track("Exit", external_id=UID, data={"i": i})
        """,
        "async": """
            import asyncio
            from pier.client import AsyncClient
            async def main():
                client = AsyncClient(KEY, URL, flush_interval=30)
                for i in range(20):
                    await client.track("Exit", external_id=UID, data={"i": i})
            asyncio.run(main())
        """,
    }[kind]
    prelude = f"KEY, URL, UID = {pier_server.public_key!r}, {pier_server.url!r}, {uid!r}\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(e["data"]["i"] for e in pier_server.events(uid, "Exit")) == list(range(20))


def test_rate_limited_requests_wait_for_retry_after(
    make_client: Any, pier_server: Any, uid: str, request_log: Any
) -> None:
    key = pier_server.cli(
        "keys",
        "create",
        "--project",
        pier_server.project_id,
        "--scope",
        "public",
        "--rate-limit",
        "2",
    )
    client = make_client(api_key=key, max_retries=20)
    for i in range(8):
        client.identify(external_id=uid, data={"n": i})  # succeeds, after waiting if need be
    assert pier_server.user(uid)["data"]["n"] == 7
    waits = [r.getMessage() for r in request_log.caplog.records if "HTTP 429" in r.getMessage()]
    assert waits, "no request was rate limited"
    # fast_retries makes backoff at most 0.05 s: a longer wait is the server's Retry-After
    assert all(float(m.rsplit(" in ", 1)[1].rstrip("s")) >= 0.5 for m in waits)
