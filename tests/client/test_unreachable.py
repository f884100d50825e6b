"""Behaviour when nothing listens: retries, the full queue, on_error. Only loopback traffic."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest

from pier.client import AsyncClient, Client, PierError, QueueFullError


@pytest.fixture
def dead_url() -> str:
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_network_errors_are_retried_then_raised(
    dead_url: str, fast_retries: Any, request_log: Any
) -> None:
    with fast_retries(Client("pk_test", dead_url), max_retries=3) as client:
        started = time.monotonic()
        with pytest.raises(PierError) as info:
            client.identify(external_id="u1")
        assert time.monotonic() - started < 2
    assert info.value.status is None
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert request_log.retries() == 3


def test_background_failure_reaches_on_error_with_the_events(
    dead_url: str, fast_retries: Any, caplog: pytest.LogCaptureFixture
) -> None:
    failed: list[tuple[BaseException, list[dict]]] = []
    client = Client("pk_test", dead_url, on_error=lambda exc, events: failed.append((exc, events)))
    with fast_retries(client, max_retries=2):
        ids = [client.track("e", external_id="u1", data={"i": i}) for i in range(3)]
        client.flush()
        assert [e["message_id"] for _, batch in failed for e in batch] == ids
    assert all(isinstance(exc, PierError) for exc, _ in failed)
    assert any(r.name == "pier.client" and r.levelname == "ERROR" for r in caplog.records)


def test_full_queue_raises(dead_url: str, fast_retries: Any) -> None:
    failed: list[dict] = []
    client = Client(
        "pk_test",
        dead_url,
        max_queue=5,
        max_batch=1,
        on_error=lambda exc, events: failed.extend(events),
    )
    fast_retries(client, max_retries=10_000)  # keeps the worker busy with the first event
    for i in range(5):
        client.track("e", external_id="u1", data={"i": i})
    with pytest.raises(QueueFullError):
        client.track("e", external_id="u1")
    client.retry.max_retries = 0  # let it give up, so that close() is quick
    client.close()
    assert sorted(e["data"]["i"] for e in failed) == [0, 1, 2, 3, 4]  # none lost silently
    with pytest.raises(RuntimeError, match="closed"):
        client.track("e", external_id="u1")


def test_async_full_queue_and_on_error(dead_url: str, fast_retries: Any) -> None:
    failed: list[dict] = []

    async def main() -> None:
        client = AsyncClient(
            "pk_test", dead_url, max_queue=3, on_error=lambda exc, events: failed.extend(events)
        )
        fast_retries(client, max_retries=2)
        async with client:
            for i in range(3):
                await client.track("e", external_id="u1", data={"i": i})
            with pytest.raises(QueueFullError):
                await client.track("e", external_id="u1")
            await client.flush()
            assert sorted(e["data"]["i"] for e in failed) == [0, 1, 2]
            await client.track("e", external_id="u1", data={"i": 3})  # room again
        assert len(failed) == 4

    asyncio.run(main())


def test_async_network_errors_are_retried_then_raised(
    dead_url: str, fast_retries: Any, request_log: Any
) -> None:
    async def main() -> None:
        async with fast_retries(AsyncClient("pk_test", dead_url), max_retries=2) as client:
            with pytest.raises(PierError) as info:
                await client.alias("a", "e")
            assert info.value.status is None

    asyncio.run(main())
    assert request_log.retries() == 2
