"""Group commit: many concurrent requests share a transaction; each fails alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pier.clock import now_ms
from pier.domain.commands import Alias, EventIn, Identify, TrackEvents, Traits
from pier.domain.errors import DomainError
from pier.store import make_store
from pier.store.base import StoreUnavailable
from pier.writer import Writer


async def open_writer(tmp_path: Path) -> tuple[Writer, int]:
    store = make_store(f"sqlite:///{tmp_path}/pier.db")
    await store.open()
    await store.migrate()
    project = await store.create_project("p", now_ms())
    writer = Writer(store)
    writer.start()
    return writer, project.id


def event(pid: int, ext: str, data: dict | None = None) -> TrackEvents:
    return TrackEvents(
        project_id=pid,
        events=[EventIn(anonymous_id=None, external_id=ext, name="x", data=data or {})],
    )


def test_concurrent_requests_share_transactions(tmp_path: Path) -> None:
    async def main() -> None:
        writer, pid = await open_writer(tmp_path)
        await asyncio.gather(*(writer.submit(event(pid, f"u{i % 7}")) for i in range(200)))
        assert writer.committed == 200
        assert writer.batches < 20
        stats = await writer.store.stats(pid)
        assert stats["users"] == 7 and stats["events"] == 214  # + user_created, user_updated
        await writer.stop()
        await writer.store.close()

    asyncio.run(main())


def test_one_failing_command_does_not_fail_its_batch(tmp_path: Path) -> None:
    async def main() -> None:
        writer, pid = await open_writer(tmp_path)
        ok = [writer.submit(event(pid, f"u{i}")) for i in range(10)]
        bad = writer.submit(event(pid, "bad", {"x": object()}))  # cannot be encoded: a bug
        refused = writer.submit(Alias(project_id=pid, anonymous_id="a", external_id="e2"))
        first = writer.submit(Alias(project_id=pid, anonymous_id="a", external_id="e1"))
        results = await asyncio.gather(first, *ok, bad, refused, return_exceptions=True)
        assert results[:11] == [None] * 11
        assert isinstance(results[11], TypeError)  # as raised: a 500, not a 503 to retry
        assert isinstance(results[12], DomainError)
        stats = await writer.store.stats(pid)
        assert stats["users"] == 11  # u0..u9 and e1
        await writer.stop()
        await writer.store.close()

    asyncio.run(main())


def test_stop_commits_what_is_queued(tmp_path: Path) -> None:
    async def main() -> None:
        writer, pid = await open_writer(tmp_path)
        tasks = [
            asyncio.create_task(
                writer.submit(
                    Identify(
                        project_id=pid, anonymous_id=None, external_id=f"u{i}", traits=Traits()
                    )
                )
            )
            for i in range(50)
        ]
        await asyncio.sleep(0)
        await writer.stop()
        await asyncio.gather(*tasks)
        assert (await writer.store.stats(pid))["users"] == 50
        with pytest.raises(StoreUnavailable):
            await writer.submit(event(pid, "late"))
        await writer.store.close()

    asyncio.run(main())
