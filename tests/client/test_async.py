"""AsyncClient against a real Pier server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pier.client import AsyncClient, PierError


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def make(server: Any, fast_retries: Any, **options: Any) -> AsyncClient:
    return fast_retries(AsyncClient(server.public_key, server.url, **options))


def test_identify_alias_device_round_trip(pier_server: Any, fast_retries: Any, uid: str) -> None:
    async def main() -> None:
        async with make(pier_server, fast_retries) as client:
            await client.identify(anonymous_id=f"{uid}-a", email="a@example.com", data={"n": 1})
            await client.alias(f"{uid}-a", uid)
            await client.register_device(
                f"{uid}-d", "ios", "iPhone15,2", "7", "2.0", external_id=uid, token=f"{uid}-t"
            )

    run(main())
    user = pier_server.user(uid)
    assert f"{uid}-a" in user["anonymous_ids"]
    assert user["email"] == "a@example.com" and user["data"]["n"] == 1
    assert [d["device_id"] for d in user["devices"]] == [f"{uid}-d"]
    assert user["devices"][0]["token"] == f"{uid}-t"


def test_track_flush_and_batching(
    pier_server: Any, fast_retries: Any, uid: str, request_log: Any
) -> None:
    async def main() -> None:
        async with make(pier_server, fast_retries, max_batch=40, flush_interval=30) as client:
            for i in range(100):
                await client.track("Async", external_id=uid, data={"i": i})
            await client.flush()
            assert request_log.count("/api/client/events") == 3  # 40 + 40 + 20
            stored = await asyncio.to_thread(pier_server.events, uid, "Async")
            assert sorted(e["data"]["i"] for e in stored) == list(range(100))

    run(main())


def test_flush_interval_sends_without_flush(pier_server: Any, fast_retries: Any, uid: str) -> None:
    async def main() -> None:
        async with make(pier_server, fast_retries, flush_interval=0.2) as client:
            await client.track("Timed", external_id=uid)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if await asyncio.to_thread(pier_server.events, uid, "Timed"):
                    return
                await asyncio.sleep(0.1)
            pytest.fail("the event was not sent within 10 s")

    run(main())


def test_aclose_flushes(pier_server: Any, fast_retries: Any, uid: str) -> None:
    async def main() -> None:
        client = make(pier_server, fast_retries, flush_interval=30)
        for i in range(7):
            await client.track("Closed", external_id=uid, data={"i": i})
        await client.aclose()
        await client.aclose()  # idempotent

    run(main())
    assert len(pier_server.events(uid, "Closed")) == 7


def test_validation_error_is_not_retried(
    pier_server: Any, fast_retries: Any, uid: str, request_log: Any
) -> None:
    async def main() -> PierError:
        async with make(pier_server, fast_retries) as client:
            with pytest.raises(PierError) as info:
                await client.identify(external_id=uid, timezone="Mars/Olympus")
            return info.value

    error = run(main())
    assert error.status == 422 and error.errors
    assert request_log.count("/api/client/identify") == 1
    assert request_log.retries() == 0


def test_rejected_event_is_reported_and_the_rest_delivered(
    pier_server: Any, fast_retries: Any, uid: str
) -> None:
    failed: list[dict] = []

    async def main() -> None:
        client = make(pier_server, fast_retries, on_error=lambda exc, events: failed.extend(events))
        async with client:
            await client.track("Good", external_id=uid)
            await client.track("Bad", external_id=uid, data={"x": 1}, anonymous_id="a" * 300)

    run(main())
    assert [e["name"] for e in failed] == ["Bad"]
    assert len(pier_server.events(uid, "Good")) == 1
