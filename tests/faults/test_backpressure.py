"""Backpressure: when the writer falls behind (here: its transactions wait at a gate), requests
beyond its pending limit are answered 503 with Retry-After at once, never 204, and write nothing;
what was queued is committed and answered 204 when the writer catches up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import pier.app
from conftest import LiveServer, Tenant, make_tenant
from faults.pierproc import stored_message_ids
from pier.clock import now_ms
from pier.domain.commands import Identify, Traits
from pier.store import make_store
from pier.writer import Overloaded, Writer

MAX_PENDING = 10


class GatedStore:
    """A real store whose write transactions wait until the gate opens."""

    def __init__(self, store: Any, gate: threading.Event) -> None:
        self._store = store
        self.gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        deadline = time.monotonic() + 30
        while not self.gate.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        async with self._store.transaction() as tx:
            yield tx


def test_writer_refuses_beyond_max_pending_and_commits_what_it_queued(tmp_path: Path) -> None:
    async def main() -> None:
        store = make_store(f"sqlite:///{tmp_path}/pier.db")
        await store.open()
        await store.migrate()
        pid = (await store.create_project("p", now_ms())).id
        gate = threading.Event()
        writer = Writer(GatedStore(store, gate), max_pending=5)  # type: ignore[arg-type]
        writer.start()

        def identify(i: int) -> Identify:
            return Identify(project_id=pid, anonymous_id=None, external_id=f"u{i}", traits=Traits())

        queued = [asyncio.create_task(writer.submit(identify(i))) for i in range(5)]
        await asyncio.sleep(0.05)
        assert writer.pending == 5 and not any(t.done() for t in queued)
        with pytest.raises(Overloaded):
            await writer.submit(identify(99))
        gate.set()
        await asyncio.gather(*queued)
        assert writer.pending == 0
        await writer.submit(identify(6))  # caught up: accepted again
        assert (await store.stats(pid))["users"] == 6
        await writer.stop()
        await store.close()

    asyncio.run(main())


@pytest.fixture
def gated(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LiveServer, threading.Event]]:
    """A live server whose writer waits at a gate and queues at most MAX_PENDING events."""
    gate = threading.Event()
    real = pier.app.make_store
    monkeypatch.setattr(pier.app, "make_store", lambda *a: GatedStore(real(*a), gate))
    live = LiveServer(database_url, max_pending=MAX_PENDING)
    live.start()
    try:
        yield live, gate
    finally:
        gate.set()
        live.stop()


def events(prefix: str, n: int) -> list[dict]:
    return [{"name": "e", "external_id": "u", "message_id": f"{prefix}-{j}"} for j in range(n)]


def test_http_answers_503_not_204_when_the_writer_is_behind(
    gated: tuple[LiveServer, threading.Event],
) -> None:
    live, gate = gated
    app = live.server.config.app
    while not hasattr(app, "state"):  # through the ASGI wrappers (access log, CORS)
        app = app.app
    writer = app.state.writer
    tenant: Tenant = make_tenant(live)

    async def main() -> tuple[list[int], list[httpx.Response]]:
        headers = {"Authorization": f"Bearer {tenant.public_key}"}
        async with httpx.AsyncClient(base_url=live.url, headers=headers, timeout=30) as http:

            def post(body: list[dict]) -> asyncio.Task[httpx.Response]:
                return asyncio.create_task(http.post("/api/client/events", json=body))

            queued = [post(events(f"q{i}", 3)) for i in range(3)]  # 9 of 10 pending
            deadline = time.monotonic() + 10
            while writer.pending < 9 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            assert writer.pending == 9
            # Behind: 40 more requests of 2 events each find no room; all answered at once.
            refused = await asyncio.gather(*(post(events(f"r{i}", 2)) for i in range(40)))
            assert writer.pending == 9 and not any(t.done() for t in queued)
            gate.set()
            return [r.status_code for r in await asyncio.gather(*queued)], refused

    statuses, refused = asyncio.run(main())
    assert statuses == [204, 204, 204]
    for r in refused:
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["status"] == "error"
    stored = stored_message_ids(live.database_url, tenant.id)
    assert sorted(stored) == sorted(f"q{i}-{j}" for i in range(3) for j in range(3))
    tenant.public.close()
    tenant.secret.close()
