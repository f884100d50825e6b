"""Group commit: one writer per process takes the commands of every waiting request, applies them
in one transaction and answers each request only after its data is committed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from .api import metrics
from .clock import now_ms
from .domain.batch import Batch, ChangeSet, LoadRequest, load_request
from .domain.commands import Command, Sequence, TrackEvents
from .domain.errors import DomainError, NeedsLoad
from .store.base import Store, StoreUnavailable, WriteTx

log = logging.getLogger("pier.writer")

MAX_BATCH_ITEMS = 5000  # events (or other commands) committed in one transaction at most
MAX_PENDING_ITEMS = 200_000  # beyond this the writer is behind: new requests get 503
MAX_RETRIES = 20


class Overloaded(Exception):
    """The writer is too far behind; the request is answered 503 with Retry-After."""


class KeyReused(Exception):
    """An Idempotency-Key came back with a different request; answered 409."""


RequestKey = tuple[str, str]  # (Idempotency-Key, fingerprint of the request)


def _size(cmd: Command) -> int:
    if isinstance(cmd, Sequence):
        return sum(_size(c) for c in cmd.commands)
    return len(cmd.events) if isinstance(cmd, TrackEvents) else 1


class Writer:
    def __init__(self, store: Store, *, max_pending: int = MAX_PENDING_ITEMS) -> None:
        self.store = store
        self.max_pending = max_pending
        self.pending = 0
        self._queue: deque[tuple[Command, asyncio.Future[None], RequestKey | None]] = deque()
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
        size = _size(cmd)
        if self._closing:
            raise StoreUnavailable("the server is shutting down")
        if self.pending + size > self.max_pending:
            raise Overloaded("the writer is behind")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((cmd, fut, request_key))
        self.pending += size
        self._wake.set()
        await fut

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            items = self._take()
            try:
                await self._commit(items)
            except Exception:  # never let the writer die
                log.exception("writer failed a batch")
                for _, fut, _ in items:
                    if not fut.done():
                        fut.set_exception(StoreUnavailable("the write failed"))
            finally:
                self.pending -= sum(_size(cmd) for cmd, _, _ in items)
                metrics.queue_depth(self.pending)
            try:
                await self.store.maintain()
            except Exception:
                log.exception("store upkeep failed; retrying after the next batch")

    def _take(self) -> list[tuple[Command, asyncio.Future[None], RequestKey | None]]:
        items = []
        total = 0
        while self._queue and total < MAX_BATCH_ITEMS:
            item = self._queue.popleft()
            items.append(item)
            total += _size(item[0])
        return items

    async def _commit(
        self, items: list[tuple[Command, asyncio.Future[None], RequestKey | None]]
    ) -> None:
        """Commit the batch; when it fails as a whole, commit each command alone."""
        try:
            errors = await self.run_batch([i[0] for i in items], [i[2] for i in items])
        except StoreUnavailable as exc:
            if len(items) == 1:
                log.warning("write failed, answered 503: %s", exc)
                if not items[0][1].done():  # its request may have been cancelled meanwhile
                    items[0][1].set_exception(exc)
                return
            for item in items:  # isolate the one that fails, if one does
                await self._commit([item])
            return
        for (_, fut, _), error in zip(items, errors, strict=True):
            if fut.done():
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

    async def run_batch(
        self, commands: list[Command], keys: list[RequestKey | None] | None = None
    ) -> list[Exception | None]:
        """Load, decide and write `commands` in one transaction; the error of each, or None."""
        keys = keys or [None] * len(commands)
        request = load_request(commands)
        request.request_keys.update(
            (c.project_id, k[0]) for c, k in zip(commands, keys, strict=True) if k
        )
        started = time.perf_counter()
        for attempt in range(MAX_RETRIES):
            try:
                async with self.store.transaction() as tx:
                    errors, changes = await self._decide_and_write(tx, request, commands, keys)
                self.batches += 1
                self.committed += len(commands)
                metrics.observe_batch(commands, time.perf_counter() - started, changes)
                return errors
            except Exception as exc:
                if not self.store.is_retryable(exc) or attempt == MAX_RETRIES - 1:
                    if isinstance(exc, StoreUnavailable):
                        raise
                    log.exception("batch of %d commands failed", len(commands))
                    raise StoreUnavailable(str(exc)) from exc
                metrics.replayed()
                await asyncio.sleep(0.001 * attempt)
        raise AssertionError("unreachable")

    async def _decide_and_write(
        self,
        tx: WriteTx,
        request: LoadRequest,
        commands: list[Command],
        keys: list[RequestKey | None],
    ) -> tuple[list[Exception | None], ChangeSet]:
        ids = UserIds(await tx.reserve_user_ids(sum(_size(cmd) for cmd in commands)))
        full: set[int] = set()
        while True:
            ids.used = 0
            batch = Batch(now_ms(), ids.next)
            await tx.load(request, batch)
            more = full | batch.full_load_candidates(commands)
            if more:
                await tx.load_full(more, batch)
            try:
                errors = [_apply(batch, cmd, key) for cmd, key in zip(commands, keys, strict=True)]
            except NeedsLoad as exc:  # replay with more loaded
                if exc.user_ids <= more:
                    raise RuntimeError(f"users {exc.user_ids} incomplete after loading") from exc
                full = more | exc.user_ids
                continue
            changes = batch.changes()
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


def _apply(batch: Batch, cmd: Command, key: RequestKey | None = None) -> Exception | None:
    if key is not None:  # Idempotency-Key: a repeat answers as the first did, and writes nothing
        seen = batch.request_keys.get((cmd.project_id, key[0]))
        if seen is not None:
            return None if seen == key[1] else KeyReused(key[0])
    try:
        batch.apply(cmd)
    except DomainError as exc:
        return exc
    if key is not None:
        batch.request_keys[(cmd.project_id, key[0])] = key[1]
        batch.new_request_keys.append((cmd.project_id, key[0], key[1]))
    return None
