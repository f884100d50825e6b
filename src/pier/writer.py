"""Group commit: one writer per process takes the commands of the waiting requests, applies them
in one transaction and answers each request only after its data is committed.

Fair between projects: each project's requests wait in a lane of their own, in arrival order, and
a batch takes one request from each lane in turn until it holds a budget of work (events, and
merges weighed more). However long a project's backlog, another project's request waits only
for the batch in flight and at most one request of each other project with work queued."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Protocol

from .clock import now_ms
from .domain.batch import Batch, ChangeSet
from .domain.commands import Command
from .domain.decide import Plan, RequestKey, decide, plan, size
from .domain.identity import MAX_MERGES_PER_REQUEST, merge_bound
from .process import metrics
from .settings import Settings
from .store.base import Store, StoreUnavailable, WriteTx

log = logging.getLogger("pier.writer")

MERGE_WEIGHT = 40  # a merge costs about as much as this many events (docs/performance.md)
MAX_RETRIES = 20


class Overloaded(Exception):
    """The writer is too far behind; the request is answered 503 with Retry-After."""


def _work(cmd: Command) -> int:
    """What a request may cost a batch, at most: its items, and its merges, up to the bound."""
    return size(cmd) + MERGE_WEIGHT * min(merge_bound(cmd), MAX_MERGES_PER_REQUEST)


class Outcome(Protocol):
    """Where a command's outcome goes once its batch is done: an asyncio future (submit), or
    what answers it at once (the writer process answers a worker's request so, `put`)."""

    def done(self) -> bool: ...
    def set_result(self, result: None, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class _Item:
    __slots__ = ("cmd", "fut", "key", "size", "work")

    def __init__(self, cmd: Command, fut: Outcome, key: RequestKey | None, size: int) -> None:
        self.cmd, self.fut, self.key, self.size, self.work = cmd, fut, key, size, _work(cmd)


class Writer:
    def __init__(
        self,
        store: Store,
        *,
        max_pending: int = Settings.max_pending,
        batch_work: int = Settings.batch_work,
    ) -> None:
        self.store = store
        self.max_pending = max_pending  # items queued; beyond, the writer is behind: 503
        self.batch_work = batch_work  # units of work (see _work) a transaction takes, beyond one
        self.pending = 0
        # project id → its waiting requests, in arrival order; the dict's order is the turn
        self._lanes: dict[int, deque[_Item]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0  # transactions committed
        self.committed = 0  # commands committed

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pier-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def submit(self, cmd: Command, request_key: RequestKey | None = None) -> None:
        """Returns once `cmd` is committed; raises DomainError, KeyReused, StoreUnavailable or
        Overloaded. With a request key, a repeat of a committed request changes nothing."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.put(cmd, request_key, fut)
        await fut

    def put(self, cmd: Command, request_key: RequestKey | None, outcome: Outcome) -> None:
        """Queue `cmd`; its outcome is set once its batch is done (what submit awaits). Raises
        StoreUnavailable or Overloaded, queuing nothing, when the writer cannot take it."""
        items = size(cmd)
        if self._closing:
            raise StoreUnavailable("the server is shutting down")
        if self.pending + items > self.max_pending:
            raise Overloaded("the writer is behind")
        lane = self._lanes.get(cmd.project_id)
        if lane is None:
            lane = self._lanes[cmd.project_id] = deque()
        lane.append(_Item(cmd, outcome, request_key, items))
        self.pending += items
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self._lanes:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            items = self._take()
            try:
                await self._commit(items)
            except Exception as exc:  # a bug in the writer: never let it die
                log.exception("writer failed a batch")
                for item in items:
                    if not item.fut.done():
                        item.fut.set_exception(exc)
            finally:
                self.pending -= sum(item.size for item in items)
                metrics.queue_depth(self.pending)
            if self.store.never_suspends:
                # one turn of the event loop before anything else: the batch's answers go out
                # (their callbacks run, the writer process's frames are written) and the
                # requests that came meanwhile are read. Else the answers waited for the
                # upkeep below and the next batches, until the queue was empty. (A store whose
                # batches suspend gives the loop its turns; there the extra one measured
                # slower: docs/performance.md, "The twelfth session".)
                await asyncio.sleep(0)
            try:
                await self.store.maintain()
            except Exception:
                log.exception("store upkeep failed; retrying after the next batch")

    def _take(self) -> list[_Item]:
        """The next batch: a request from each lane in turn (a lane served goes to the back),
        until the batch holds `batch_work`; always at least one request."""
        items: list[_Item] = []
        work = 0
        lanes = self._lanes
        while lanes and work < self.batch_work:
            project = next(iter(lanes))
            lane = lanes.pop(project)
            item = lane.popleft()
            if lane:
                lanes[project] = lane
            items.append(item)
            work += item.work
        return items

    async def _commit(self, items: list[_Item]) -> None:
        """Commit the batch; when it fails as a whole, commit each command alone. A request
        fails with what failed its command alone: StoreUnavailable (503), or a bug (500, logged
        with the request's id where the request answers it)."""
        try:
            errors = await self.run_batch([i.cmd for i in items], [i.key for i in items])
        except Exception as exc:
            if len(items) == 1:
                if isinstance(exc, StoreUnavailable):
                    log.warning("write failed, answered 503: %s", exc)
                if not items[0].fut.done():  # its request may have been cancelled meanwhile
                    items[0].fut.set_exception(exc)
                elif not isinstance(exc, StoreUnavailable):
                    log.error("a cancelled request's write failed", exc_info=exc)
                return
            for item in items:  # isolate the one that fails, if one does
                await self._commit([item])
            return
        for item, error in zip(items, errors, strict=True):
            if item.fut.done():
                continue
            if error is None:
                item.fut.set_result(None)
            else:
                item.fut.set_exception(error)

    async def run_batch(
        self, commands: list[Command], keys: list[RequestKey | None] | None = None
    ) -> list[Exception | None]:
        """Load, decide and write `commands` in one transaction; the error of each, or None."""
        planned = plan(commands, keys)
        started = time.perf_counter()
        for attempt in range(MAX_RETRIES):
            try:
                async with self.store.transaction() as tx:
                    errors, changes = await self._decide_and_write(tx, planned)
                self.batches += 1
                self.committed += len(commands)
                metrics.observe_batch(commands, time.perf_counter() - started, changes)
                return errors
            except Exception as exc:
                # StoreUnavailable: the database cannot serve (503); an error that is neither
                # that nor a conflict is a bug (500), raised as it is
                if not self.store.is_retryable(exc):
                    raise
                if attempt == MAX_RETRIES - 1:
                    raise StoreUnavailable(f"kept conflicting: {exc}") from exc
                metrics.replayed()
                await asyncio.sleep(0.001 * attempt)
        raise AssertionError("unreachable")

    async def _decide_and_write(
        self, tx: WriteTx, planned: Plan
    ) -> tuple[list[Exception | None], ChangeSet]:
        ids = UserIds(await tx.reserve_user_ids(planned.new_users))
        batch = Batch(now_ms(), ids.next)
        await tx.load(planned.request, batch)
        errors, changes = decide(planned, batch)
        await tx.write(changes)
        await tx.release_user_ids(ids.unused())
        return errors, changes


class UserIds:
    """The ids reserved for the users a batch may create."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.used = 0

    def next(self) -> int:
        self.used += 1
        return self.ids[self.used - 1]

    def unused(self) -> list[int]:
        return self.ids[self.used :]
