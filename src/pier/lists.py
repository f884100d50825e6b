"""Computing lists' members (docs/lists.md): the backfill of a dynamic list over the data already
stored, shared by the API (in the background, `ListJobs`) and the CLI (awaited)."""

from __future__ import annotations

import asyncio
import logging

import msgspec

from .clock import now_ms
from .domain.segments import parse_rule
from .store.base import ListRow, Store

log = logging.getLogger("pier.lists")
SWEEP_BATCH = 500  # memberships evaluated in one transaction of the sweeper


async def compute(store: Store, row: ListRow, now: int | None = None) -> bool:
    """Compute a dynamic list's members at `now` and make them its members, with its settled
    state; False (and nothing written) when its rule changed meanwhile (a newer computation
    was asked for)."""
    assert row.rule is not None
    at = now_ms() if now is None else now
    rule = parse_rule(msgspec.json.decode(row.rule), at)
    mark = await store.feed_mark(row.project_id)  # before the snapshot: changes after it are
    members = await store.compute_members(row.project_id, rule, at)  # evaluated again at the end
    return await store.finish_list(row, members, at, mark, rule)


async def add_members(store: Store, row: ListRow, external_ids: list[str], now: int) -> list[int]:
    """Add the users of these external ids to a static list, all of them or none: the indexes
    of the ids that are no user of the project (nothing added when there are any)."""
    found = await store.user_ids(row.project_id, external_ids)
    unknown = [i for i, e in enumerate(external_ids) if e not in found]
    if not unknown:
        await store.change_members(row.project_id, row.id, sorted(set(found.values())), [], now)
    return unknown


async def remove_members(store: Store, row: ListRow, external_ids: list[str], now: int) -> None:
    """Remove the users of these external ids from a static list (others are skipped)."""
    found = await store.user_ids(row.project_id, external_ids)
    await store.change_members(row.project_id, row.id, [], sorted(set(found.values())), now)


class ListJobs:
    """Backfills in the background, one task per list; a newer request for a list replaces the
    task of an older one (its result would be refused anyway: versions)."""

    def __init__(self, store: Store, sweep_seconds: float) -> None:
        """`sweep_seconds`: between two looks for memberships due (settings.list_sweep)."""
        self.store = store
        self.sweep_seconds = sweep_seconds
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Go on with the lists a stopped process left loading; start the sweeper."""
        for row in await self.store.loading_lists():
            self.schedule(row)
        self.sweeper = asyncio.create_task(self._sweep(), name="pier-lists-sweeper")

    async def _sweep(self) -> None:
        """Memberships that move with time alone (a window, a relative date), when they are
        due (pier/store: list_due); a full batch is followed by the next at once."""
        while True:
            try:
                done = await self.store.sweep_lists(now_ms(), SWEEP_BATCH)
            except Exception:  # logged; tried again at the next turn
                log.exception("sweeping lists failed")
                done = 0
            if done < SWEEP_BATCH:
                await asyncio.sleep(self.sweep_seconds)

    def schedule(self, row: ListRow) -> None:
        self.cancel(row.id)
        task = asyncio.create_task(self._run(row), name=f"pier-list-{row.id}")
        self.tasks[row.id] = task
        task.add_done_callback(lambda done: self._forget(row.id, done))

    def cancel(self, list_id: int) -> None:
        old = self.tasks.pop(list_id, None)
        if old is not None:
            old.cancel()

    def _forget(self, list_id: int, task: asyncio.Task[None]) -> None:
        if self.tasks.get(list_id) is task:
            del self.tasks[list_id]

    async def _run(self, row: ListRow) -> None:
        try:
            await compute(self.store, row)
        except asyncio.CancelledError:
            raise
        except Exception:  # logged; the list stays loading, and the next start goes on with it
            log.exception("computing list %s failed", row.id)

    async def stop(self) -> None:
        tasks = [*self.tasks.values(), *([self.sweeper] if self.sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()

    async def idle(self) -> None:
        """Wait until every scheduled computation is done (tests, the CLI)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks.values()), return_exceptions=True)
