"""Concurrency over real HTTP against `pier serve --workers 2`, on every backend: racing requests
lose nothing, create one user, and never get a 5xx (conflicts are retried inside Pier)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Tenant, free_port, make_tenant

PIER = str(Path(sys.executable).with_name("pier"))


class Workers:
    """`pier serve --workers 2` in a subprocess; quacks like LiveServer for make_tenant."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [PIER, "serve", "--workers", "2", "--port", str(self.port)]
        args += ["--database-url", database_url]
        self.proc = subprocess.Popen(args, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("pier serve --workers 2 did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def workers(database_url: str) -> Iterator[Workers]:
    w = Workers(database_url)
    yield w
    w.stop()


@pytest.fixture
def tenant2(workers: Workers) -> Tenant:
    return make_tenant(workers)  # type: ignore[arg-type]


async def race(url: str, key: str, calls: list[tuple[str, object]]) -> list[int]:
    """Send every call at once, each on its own connection (so both workers get some)."""

    async def one(path: str, body: object) -> int:
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            r = await client.post(
                f"/api/client/{path}", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            return r.status_code

    return await asyncio.gather(*(one(path, body) for path, body in calls))


def test_racing_identifies_make_one_user_with_every_key(tenant2: Tenant) -> None:
    calls = [("identify", {"external_id": "new", "data": {f"k{i}": i}}) for i in range(50)]
    statuses = asyncio.run(race(tenant2.server.url, tenant2.public_key, calls))
    assert statuses == [204] * 50
    user = tenant2.user("new")
    assert user["data"] == {f"k{i}": i for i in range(50)}
    assert tenant2.counts()["users"] == 1


def test_racing_alias_and_identify_always_link(tenant2: Tenant) -> None:
    calls: list[tuple[str, object]] = []
    for i in range(20):
        pair = {"anonymous_id": f"a{i}", "external_id": f"e{i}"}
        calls += [("alias", pair), ("identify", {**pair, "email": f"e{i}@example.com"})]
    statuses = asyncio.run(race(tenant2.server.url, tenant2.public_key, calls))
    assert statuses == [204] * 40
    for i in range(20):
        user = tenant2.user(f"a{i}", by="anonymous_id")
        assert user["external_id"] == f"e{i}" and user["email"] == f"e{i}@example.com"
    assert tenant2.counts()["users"] == 20


def test_racing_device_registrations_leave_the_token_on_one_user(tenant2: Tenant) -> None:
    def device(user: str, device_id: str) -> dict:
        return {
            "external_id": user,
            "device_id": device_id,
            "token": "shared-token",
            "os": "Android",
            "model": "Pixel",
            "app_build": "1",
            "app_version": "1",
        }

    calls: list[tuple[str, object]] = [
        ("devices", device(f"u{i % 2}", f"d{i % 3}")) for i in range(12)
    ]
    statuses = asyncio.run(race(tenant2.server.url, tenant2.public_key, calls))
    assert statuses == [204] * 12
    holders = [
        d for u in ("u0", "u1") for d in tenant2.user(u)["devices"] if d["token"] == "shared-token"
    ]
    assert len(holders) == 1


def test_racing_event_posts_lose_nothing_and_create_one_user(tenant2: Tenant) -> None:
    calls: list[tuple[str, object]] = [
        ("events", [{"name": f"c{i}-{j}", "anonymous_id": "fresh"} for j in range(10)])
        for i in range(20)
    ]
    statuses = asyncio.run(race(tenant2.server.url, tenant2.public_key, calls))
    assert statuses == [204] * 20
    names = {e["name"] for e in tenant2.events("fresh", by="anonymous_id")}
    created = {"user_created", "user_updated"}
    assert names == {f"c{i}-{j}" for i in range(20) for j in range(10)} | created
    assert tenant2.counts()["users"] == 1


def test_feed_follower_misses_nothing_while_workers_write(tenant2: Tenant) -> None:
    """A consumer polling the project feed during racing writes on 2 processes sees every event
    exactly once: ids become visible in order."""
    seen: list[int] = []
    cursor: str | None = None

    def poll() -> None:
        nonlocal cursor
        params = {"limit": 1000, **({"after": cursor} if cursor else {})}
        page = tenant2.secret.get("/api/client/events", params=params).json()
        seen.extend(e["id"] for e in page["results"])
        cursor = page["next_cursor"] or cursor

    async def write_and_poll() -> None:
        calls: list[tuple[str, object]] = [
            ("events", [{"name": f"n{i}-{j}", "external_id": f"u{i % 7}"} for j in range(20)])
            for i in range(60)
        ]
        writing = asyncio.create_task(race(tenant2.server.url, tenant2.public_key, calls))
        while not writing.done():
            await asyncio.to_thread(poll)
        assert await writing == [204] * 60

    asyncio.run(write_and_poll())
    for _ in range(3):
        poll()
    assert len(seen) == len(set(seen)) == tenant2.counts()["events"]
