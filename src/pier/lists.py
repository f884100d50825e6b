"""Computing lists' members (docs/lists.md): the backfill of a dynamic list over the data already
stored, shared by the API (in the background, `ListJobs`) and the CLI (awaited)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol

import msgspec

from .clock import now_ms
from .domain.segments import Rule, parse_rule
from .store.base import ListRow, Store, Tallies, lease_holder

log = logging.getLogger("pier.lists")
SWEEP_BATCH = 500  # memberships evaluated in one transaction of the sweeper
CHUNK_USERS = 5_000  # users of a backfill's chunk (settings.list_chunk)
LEASE_MS = 60_000  # a backfill's lease, renewed after each chunk; then another process takes it
RETRY_MAX_MS = 3_600_000  # the longest wait before a failed backfill is tried again
ERROR_CHARS = 1_000  # of a failed backfill's error, noted on the list
TALLY_USERS = 200_000  # a backfill over more users leaves the lists' cache to learn them


def retry_after(failures: int) -> int:
    """How long a list whose backfill failed `failures` times in a row waits before the next
    try (ms): a lease's time after the first failure, doubling after each, an hour at most."""
    return min(LEASE_MS * 2 ** min(failures - 1, 6), RETRY_MAX_MS)


async def create(
    store: Store, project_id: int, name: str, kind: str, rule: str | None, holder: str, now: int
) -> ListRow:
    """A new list (store.create_list); a dynamic one is created with its lease already held by
    `holder`, the process that goes on to compute it: no other process takes it up meanwhile
    (until the lease runs out: a creator that stopped first)."""
    until = now + LEASE_MS if rule is not None else None
    return await store.create_list(project_id, name, kind, rule, now, holder, until)


async def restart(
    store: Store, project_id: int, list_id: int, rule: str | None, holder: str, now: int
) -> ListRow | None:
    """Ask for a list's members to be computed again (store.restart_list: a new rule, unless
    None, or a recount), by `holder`, which holds its lease from the start (as `create`)."""
    return await store.restart_list(project_id, list_id, rule, now, holder, now + LEASE_MS)


class Backfill:
    """The computation of a dynamic list's members at `now` (docs/lists.md), as the holder of
    its lease (taken here): a chunk of users at a time, noting the progress after each, then
    the members and the settled state in one transaction. `done` says whether it ended so;
    it is False (no members written) when another process holds the lease, or it was lost or
    the rule changed meanwhile (a newer computation)."""

    def __init__(
        self,
        store: Store,
        row: ListRow,
        holder: str,
        now: int | None = None,
        chunk_users: int = CHUNK_USERS,
    ) -> None:
        assert row.rule is not None
        self.store, self.row, self.holder = store, row, holder
        self.now = now
        self.chunk_users = chunk_users
        self.done = False

    async def chunks(self) -> AsyncIterator[float]:
        """Run it, yielding the progress noted after each chunk but the last."""
        store, row, holder = self.store, self.row, self.holder
        if not await store.claim_list(row, holder, now_ms(), LEASE_MS):
            return
        try:
            at = now_ms() if self.now is None else self.now
            rule = parse_rule(msgspec.json.decode(row.rule or ""), at)
            mark = await store.feed_mark(row.project_id)  # before the snapshots: changes after
            ends, total = await store.user_chunks(row.project_id, self.chunk_users)  # it are
            members: list[int] = []  # evaluated again at the end (finish_list)
            # each user's tally, for the lists' cache to start with (store.compute_tallies)
            tallies: Tallies | None = {} if total <= TALLY_USERS else None
            after = 0
            for upto, rank in ends:
                members += await store.compute_members(row.project_id, rule, at, (after, upto))
                tallies = await _tallies(store, row.project_id, rule, at, (after, upto), tallies)
                progress = rank / total
                if not await store.list_progress(row, holder, progress, now_ms(), LEASE_MS):
                    return
                yield progress
                after = upto
            members += await store.compute_members(row.project_id, rule, at, (after, None))
            tallies = await _tallies(store, row.project_id, rule, at, (after, None), tallies)
            self.done = await store.finish_list(row, members, at, mark, rule, holder, tallies)
        except Exception as exc:
            await self._failed(exc)
            raise

    async def _failed(self, exc: Exception) -> None:
        """Note the failure on the list, which keeps its lease until the next try (retry_after:
        longer after each failure in a row), rather than being taken up again at once."""
        now = now_ms()
        error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
        retry_at = now + retry_after(self.row.failures + 1)
        try:
            await self.store.fail_list(self.row, self.holder, error, now, retry_at)
        except Exception:  # (the database is away, say): the lease then runs out by itself
            log.exception("noting the failure of list %s failed", self.row.id)


async def _tallies(
    store: Store,
    project_id: int,
    rule: Rule,
    at: int,
    ids: tuple[int, int | None],
    tallies: Tallies | None,
) -> Tallies | None:
    """`tallies` with a chunk's added, or None when there are none to keep."""
    if tallies is None:
        return None
    chunk = await store.compute_tallies(project_id, rule, at, ids)
    if chunk is None:
        return None
    tallies.update(chunk)
    return tallies


async def warm(store: Store, row: ListRow) -> bool:
    """Start the lists' cache with a computed list's users' tallies, as its backfill did, for
    a process that starts with an empty cache (docs/lists.md): the tallies, then the
    memberships and due instants as stored (store.warm_list). Whether it did (not: a list
    loading or changed meanwhile, a project over TALLY_USERS, a store with no such cache)."""
    if row.rule is None or row.state == "loading":
        return False
    at = now_ms()
    rule = parse_rule(msgspec.json.decode(row.rule), at)
    mark = await store.feed_mark(row.project_id)
    if await store.user_count(row.project_id) > TALLY_USERS:
        return False
    # one query over every user (a chunk's would scan the project's events again on SQLite)
    tallies = await _tallies(store, row.project_id, rule, at, (0, None), {})
    return tallies is not None and await store.warm_list(row, at, mark, tallies)


async def compute(
    store: Store,
    row: ListRow,
    holder: str,
    now: int | None = None,
    chunk_users: int = CHUNK_USERS,
) -> bool:
    """A Backfill run to its end: whether it made the list's members."""
    backfill = Backfill(store, row, holder, now, chunk_users)
    async for _ in backfill.chunks():
        pass
    return backfill.done


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


class Backfills(Protocol):
    """What the API asks of the lists' jobs: ListJobs in the process that writes, and in the
    workers of `pier serve --writer-process` the writer process's through its socket."""

    holder: str  # the lease a list is created or restarted with, computed under it

    def schedule(self, row: ListRow) -> None: ...
    def cancel(self, list_id: int) -> None: ...


class ListJobs:
    """Backfills in the background, one task per list, and the sweeper. Several processes may
    run one each on a database: a backfill is computed by the process holding the list's
    lease, and the sweeper claims the memberships it evaluates (docs/lists.md). A newer request
    for a list replaces the task of an older one (its result would be refused anyway)."""

    def __init__(self, store: Store, sweep_seconds: float, chunk_users: int = CHUNK_USERS) -> None:
        """`sweep_seconds`: between two looks for memberships due and for lists left loading
        (settings.list_sweep); `chunk_users`: users of a backfill's chunk (settings.list_chunk)."""
        self.store = store
        self.sweep_seconds = sweep_seconds
        self.chunk_users = chunk_users
        self.holder = lease_holder()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.holders: dict[int, str] = {}  # of the lists computed for another process (take)
        self.sweeper: asyncio.Task[None] | None = None
        self.warmer: asyncio.Task[None] | None = None
        self.computed = 0  # backfills this process computed to their end

    async def start(self) -> None:
        """Go on with the lists that no live process is computing; start the sweeper, and the
        warming of the lists' cache with the computed lists (`warm`, one after another)."""
        await self.resume()
        self.sweeper = asyncio.create_task(self._sweep(), name="pier-lists-sweeper")
        self.warmer = asyncio.create_task(self._warm(), name="pier-lists-warmer")

    async def _warm(self) -> None:
        try:
            for project in await self.store.list_projects():
                for row in await self.store.lists(project.id):
                    if row.type == "dynamic":
                        await warm(self.store, row)
        except asyncio.CancelledError:
            raise
        except Exception:  # logged; the cache then learns the users as their events come
            log.exception("warming the lists' cache failed")

    async def resume(self) -> None:
        """Schedule the loading lists that no process holds (left by a stopped process, or
        asked of a process that stopped before it claimed them)."""
        for row in await self.store.loading_lists(now_ms()):
            if row.id not in self.tasks:
                self.schedule(row)

    async def _sweep(self) -> None:
        """Memberships that move with time alone (a window, a relative date), when they are
        due (pier/store: list_due); a full batch is followed by the next at once. Each turn
        also takes up the lists left loading."""
        while True:
            try:
                done = await self.store.sweep_lists(now_ms(), SWEEP_BATCH)
                await self.resume()
            except Exception:  # logged; tried again at the next turn
                log.exception("sweeping lists failed")
                done = 0
            if done < SWEEP_BATCH:
                await asyncio.sleep(self.sweep_seconds)

    def schedule(self, row: ListRow) -> None:
        self._start(row.id, self._run(row, self.holder), self.holder)

    def take(self, project_id: int, list_id: int, holder: str | None) -> None:
        """Compute a list that another process created or restarted, as the holder of the
        lease it took (`pier serve --writer-process`: the workers have the writer process
        compute their lists, so that its lists' cache stays its own); None: stop it."""
        if holder is None:
            self.cancel(list_id)
        else:
            self._start(list_id, self._read_and_run(project_id, list_id, holder), holder)

    def _start(self, list_id: int, job: Coroutine[Any, Any, None], holder: str) -> None:
        self.cancel(list_id)
        task = asyncio.create_task(job, name=f"pier-list-{list_id}")
        self.tasks[list_id] = task
        if holder != self.holder:
            self.holders[list_id] = holder
        task.add_done_callback(lambda done: self._forget(list_id, done))

    def cancel(self, list_id: int) -> None:
        old = self.tasks.pop(list_id, None)
        self.holders.pop(list_id, None)
        if old is not None:
            old.cancel()

    def _forget(self, list_id: int, task: asyncio.Task[None]) -> None:
        if self.tasks.get(list_id) is task:
            del self.tasks[list_id]
            self.holders.pop(list_id, None)

    async def _read_and_run(self, project_id: int, list_id: int, holder: str) -> None:
        row = await self.store.get_list(project_id, list_id)  # (None: deleted meanwhile)
        if row is not None and row.rule is not None:
            await self._run(row, holder)

    async def _run(self, row: ListRow, holder: str) -> None:
        try:
            if await compute(self.store, row, holder, chunk_users=self.chunk_users):
                self.computed += 1
                log.info("list %s computed by process %d", row.id, os.getpid())
        except asyncio.CancelledError:
            raise
        except Exception:  # logged; the list stays loading, taken up again once its lease ends
            log.exception("computing list %s failed", row.id)

    async def stop(self) -> None:
        """Stop the backfills (their lists are given back, for the next process to start or a
        live one to take up) and the sweeper."""
        computing = {i: self.holders.get(i, self.holder) for i in self.tasks}
        others = [t for t in (self.sweeper, self.warmer) if t is not None]
        tasks = [*self.tasks.values(), *others]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()
        self.holders.clear()
        for list_id, holder in computing.items():
            try:
                await self.store.release_list(list_id, holder)
            except Exception:  # the lease then runs out by itself
                log.exception("giving list %s back failed", list_id)

    async def idle(self) -> None:
        """Wait until every scheduled computation is done (tests, the CLI)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks.values()), return_exceptions=True)
