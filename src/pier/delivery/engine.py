"""The delivery engine: one per process (`pier serve` in its background, or `pier deliver`).

It leases each active destination (a lease row renewed as it goes; another process takes an
expired one over), and for each one it holds: reads the feed after the cursor in batches, drops
what the filters skip, sends the rest (kinds.py), and moves the cursor in the transaction that
records the batch delivered. Failures that may pass (timeouts, connection errors, 408, 429, 5xx,
3xx) are retried in order, with exponential backoff and full jitter, honouring Retry-After; any
other answer, or a batch still failing when its retry window ends, is split to find the items
that fail alone: those become dead letters, and delivery moves on."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from ..clock import NEVER, now_ms
from ..process import delivery_metrics as metrics
from ..process.parent import when_parent_gone
from ..settings import Settings
from ..store.base import FeedEvent, Store, lease_holder
from ..store.destinations import Destination, Destinations
from . import kinds
from .pacing import Pacing
from .secrets import SecretKeyMissing

log = logging.getLogger("pier.delivery")

RETRYABLE_STATUS = {408, 429}
MAX_RETRY_AFTER = 3600.0  # seconds: a Retry-After beyond this is taken as this


@dataclass
class Answer:
    ok: bool
    retryable: bool
    text: str  # what happened, for last_error and dead letters
    retry_after: float | None = None


class Interrupted(Exception):
    """The lease was lost, or the destination paused, removed or rewound, or shutting down."""


def matches(name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, g) for g in globs)


def wanted(d: Destination, e: FeedEvent) -> bool:
    if d.only and not matches(e.name, d.only):
        return False
    return not (d.skip and matches(e.name, d.skip))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        return min(max(when - time.time(), 0.0), MAX_RETRY_AFTER)


async def send(http: httpx.AsyncClient, call: kinds.Call, s: Pacing) -> Answer:
    """One call; the answer body is read up to `answer_limit` bytes, never more."""
    try:
        async with asyncio.timeout(s.timeout):
            request = http.build_request(
                call.method, call.url, content=call.body, headers=call.headers
            )
            response = await http.send(request, stream=True)
            try:
                body = b""
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) >= s.answer_limit:
                        break
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        return Answer(False, True, f"timed out after {s.timeout:g} s")
    except httpx.HTTPError as exc:
        return Answer(False, True, f"{type(exc).__name__}: {exc}")
    status = response.status_code
    text = f"{status} {body[: s.answer_limit].decode('utf-8', 'replace')}".strip()
    if 200 <= status < 300:
        return Answer(True, False, text)
    retryable = status in RETRYABLE_STATUS or status >= 500 or 300 <= status < 400
    return Answer(False, retryable, text, _retry_after(response.headers.get("retry-after")))


async def send_batch(
    http: httpx.AsyncClient,
    d: Destination,
    items: list[FeedEvent],
    batch_id: str,
    s: Pacing,
    renew: Callable[[], Awaitable[object]] | None = None,
    encoded: bytes | None = None,
) -> Answer:
    """Every call of the batch, in order; the first that fails is the batch's answer. `renew`
    is awaited between calls once a third of the lease has passed (a batch of many calls)."""
    try:
        planned = kinds.calls(d, items, batch_id, encoded, sealing=s.sealing)
    except SecretKeyMissing as exc:
        return Answer(False, True, str(exc))
    renewed = time.monotonic()
    for call in planned:
        if renew is not None and time.monotonic() - renewed > s.lease_ttl / 3:
            await renew()
            renewed = time.monotonic()
        answer = await send(http, call, s)
        if not answer.ok:
            if call.method == "DELETE" and answer.text.startswith("404"):
                continue  # already gone at the target
            return answer
    return Answer(True, False, "")


class Deliverer:
    """Delivers every active destination this process can lease."""

    def __init__(self, store: Store, pacing: Pacing) -> None:
        self.store = store
        self.s = pacing
        self.destinations = Destinations(store)  # type: ignore[arg-type]
        self.holder = lease_holder()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._heads: dict[int, int] = {}  # project id → newest feed item seen
        self._waiting: dict[int, asyncio.Event] = {}  # project id → set when its feed grows
        self._renewed: dict[int, float] = {}  # destination id → when its lease was renewed
        self._lag_seen: dict[int, float] = {}  # destination id → when its lag was last measured
        self._stopping = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self.http: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name="pier-delivery")

    async def stop(self) -> None:
        """Let the batches in flight finish within the drain time; abandon the others (their
        cursors do not move); give the leases back."""
        self._stopping.set()
        for event in self._waiting.values():
            event.set()
        if self._main is not None:
            await self._main

    async def _drain(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.s.drain)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for destination_id in list(self._tasks):
            with contextlib.suppress(Exception):
                await self.destinations.release(destination_id, self.holder)

    def stop_soon(self) -> None:
        """Ask `run_until_stopped` to return (a signal handler's call)."""
        self._stopping.set()

    async def run_until_stopped(self) -> None:
        """Deliver until `stop_soon`, then stop (as `stop`)."""
        self.start()
        await self._stopping.wait()
        await self.stop()

    # -- leasing and waking --------------------------------------------------------------
    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        async with httpx.AsyncClient(
            follow_redirects=False, limits=limits, timeout=self.s.timeout
        ) as http:
            self.http = http
            watcher = asyncio.create_task(self._watch_heads())
            try:
                while not self._stopping.is_set():
                    try:
                        await self._scan()
                    except Exception:  # the database is away: try again at the next scan
                        log.exception("delivery: cannot read the destinations")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.s.scan_every)
            finally:
                watcher.cancel()
                await self._drain()  # before the client closes

    async def _scan(self) -> None:
        for destination_id in await self.destinations.active():
            task = self._tasks.get(destination_id)
            if task is not None and not task.done():
                continue
            if await self.destinations.lease(destination_id, self.holder, now_ms(), self._ttl_ms):
                self._renewed[destination_id] = time.monotonic()
                self._tasks[destination_id] = asyncio.create_task(
                    self._serve(destination_id), name=f"pier-destination-{destination_id}"
                )

    @property
    def _ttl_ms(self) -> int:
        return int(self.s.lease_ttl * 1000)

    async def _watch_heads(self) -> None:
        """Wakes the destinations of a project when its feed grows: a cheap read of its newest
        item id (the (project, id) index), so that items committed by any process go out
        within `poll_every`."""
        while True:
            for project_id, event in list(self._waiting.items()):
                try:
                    head = await self.destinations.newest(project_id)
                except Exception:
                    continue
                if head != self._heads.get(project_id):
                    self._heads[project_id] = head
                    event.set()
            await asyncio.sleep(self.s.poll_every)

    async def _wait_for_items(self, d: Destination) -> None:
        event = self._waiting.setdefault(d.project_id, asyncio.Event())
        event.clear()
        with contextlib.suppress(TimeoutError):
            # at most a third of the lease: it is renewed when the loop comes round
            await asyncio.wait_for(event.wait(), self.s.lease_ttl / 3)

    # -- one destination -----------------------------------------------------------------
    async def _serve(self, destination_id: int) -> None:
        try:
            while not self._stopping.is_set():
                d = await self._renew(destination_id)
                await self._observe_lag(d)
                items = await self.store.event_feed(d.project_id, d.cursor, d.batch_size)
                if not items:
                    await self._wait_for_items(d)
                    continue
                with contextlib.suppress(Interrupted):
                    # rewound, paused or removed meanwhile, or the lease lost: the next
                    # round's _renew says whether to go on (from the new cursor) or to stop
                    last = await self._deliver(d, items)
                    if len(items) < d.batch_size and last == items[-1].id:
                        await self._gather()
        except Interrupted:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "delivery of destination %s stopped; it is taken up again", destination_id
            )
        finally:
            self._renewed.pop(destination_id, None)
            label = str(destination_id)  # the new holder reports it now
            metrics.LAG_ITEMS.labels(label).set(0)
            metrics.LAG_SECONDS.labels(label).set(0)
            if not self._stopping.is_set():
                with contextlib.suppress(Exception):
                    await self.destinations.release(destination_id, self.holder)

    async def _gather(self) -> None:
        """After a batch that took every item there was: wait `poll_every` before the next
        read, so that the next batch gathers what is committed meanwhile. Read again at once,
        a destination that keeps up with heavy ingestion sends a call for each few items
        committed during the last one, and the call, the page read and the cursor's write,
        paid per batch, then cost more than the items (docs/performance.md)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.s.poll_every)

    async def _observe_lag(self, d: Destination) -> None:
        """The lag gauges, at most once a second (a count of the items after the cursor)."""
        now = time.monotonic()
        if now - self._lag_seen.get(d.id, NEVER) < 1.0:
            return
        self._lag_seen[d.id] = now
        items, oldest = await self.destinations.lag(d.project_id, d.cursor)
        metrics.LAG_ITEMS.labels(str(d.id)).set(items)
        age = (now_ms() - oldest) / 1000 if oldest is not None else 0.0
        metrics.LAG_SECONDS.labels(str(d.id)).set(max(age, 0.0))

    async def _renew(self, destination_id: int, cursor: int | None = None) -> Destination:
        """Renew the lease and read the destination again; Interrupted when it is no longer
        ours to deliver (or, given `cursor`, when it was rewound meanwhile)."""
        if self._stopping.is_set():
            raise Interrupted
        now = time.monotonic()
        if now - self._renewed.get(destination_id, NEVER) >= self.s.lease_ttl / 3:
            # a write (and on SQLite an fsync): once a third of the lease, not every batch
            if not await self.destinations.lease(
                destination_id, self.holder, now_ms(), self._ttl_ms
            ):
                raise Interrupted
            self._renewed[destination_id] = now
        d = await self.destinations.get(destination_id)
        if d is not None and d.lease_holder != self.holder:
            raise Interrupted  # taken over (our lease had expired)
        if d is None or d.state != "active" or (cursor is not None and d.cursor != cursor):
            raise Interrupted
        return d

    def _select(self, d: Destination, items: list[FeedEvent]) -> tuple[list[FeedEvent], int, bytes]:
        """The items of the batch that pass the filters, within its byte budget (each item's
        JSON and a comma), the id of the last item it covers (skipped ones included), and the
        kept items as one JSON array (kinds.items_json: one call, not one per item)."""
        kept = [e for e in items if wanted(d, e)] if d.only or d.skip else items
        encoded = kinds.items_json(kept)
        if len(encoded) - 1 <= d.max_bytes or len(kept) <= 1:  # "[" + items + commas + "]"
            return kept, items[-1].id, encoded
        kept, size, last = [], 0, d.cursor  # over the budget: as many as fit, one by one
        for e in items:
            if wanted(d, e):
                length = len(kinds.item_json(e)) + 1
                if kept and size + length > d.max_bytes:
                    break
                size += length
                kept.append(e)
            last = e.id
        return kept, last, kinds.items_json(kept)

    async def _deliver(self, d: Destination, items: list[FeedEvent]) -> int:
        """One batch: delivered whole, or split until the items that fail alone are found.
        Returns the new cursor (the last item covered: the byte budget may leave some)."""
        kept, last, encoded = self._select(d, items)
        cursor, delivered = d.cursor, 0
        dead: list[tuple[int, str, str]] = []
        parts = [kept] if kept else []
        window_over = False
        while parts:
            part = parts.pop(0)
            whole = encoded if part is kept else None  # a part of a split batch: its own
            answer = await self._try(d, part, cursor, window_over, whole)
            if answer.ok:
                delivered += len(part)
            elif len(part) == 1:
                dead.append((part[0].id, kinds.item_json(part[0]).decode(), answer.text))
                metrics.DEAD_LETTERS.labels(str(d.id)).inc()
            else:
                window_over = window_over or answer.retryable  # retryable: its window ended
                mid = len(part) // 2
                parts[:0] = [part[:mid], part[mid:]]
                continue
            if parts:  # progress inside a split batch is kept as it is made
                new = part[-1].id
                if not await self.destinations.commit(
                    d.id, self.holder, cursor, new, delivered, dead, now_ms()
                ):
                    raise Interrupted
                metrics.DELIVERED.labels(str(d.id)).inc(delivered)
                cursor, delivered, dead = new, 0, []
        skipped = sum(1 for e in items if e.id <= last) - len(kept)  # count as delivered
        if not await self.destinations.commit(
            d.id, self.holder, cursor, last, delivered + skipped, dead, now_ms()
        ):
            raise Interrupted
        metrics.DELIVERED.labels(str(d.id)).inc(delivered + skipped)
        return last

    async def _try(
        self,
        d: Destination,
        part: list[FeedEvent],
        cursor: int,
        window_over: bool,
        encoded: bytes | None,
    ) -> Answer:
        """Send one batch until it is delivered, refused (not retryable), or its retry window
        has ended (then answered once more only: `window_over`)."""
        assert self.http is not None
        batch_id = f"{d.id}-{part[0].id}-{part[-1].id}"
        attempts, failing_since = d.attempts, d.failing_since
        while True:
            answer = await send_batch(
                self.http, d, part, batch_id, self.s, lambda: self._renew(d.id, cursor), encoded
            )
            if answer.ok or not answer.retryable or window_over:
                if not answer.ok:
                    metrics.FAILED.labels(str(d.id)).inc()
                return answer
            metrics.FAILED.labels(str(d.id)).inc()
            now = now_ms()
            failing_since = failing_since or now
            if now - failing_since >= d.retry_window_ms:
                return answer
            attempts += 1
            ceiling = min(self.s.backoff_cap, self.s.backoff_base * 2 ** (attempts - 1))
            delay = random.uniform(0, ceiling)  # full jitter: 0 to 1 s, 2 s, 4 s... 5 min
            if answer.retry_after is not None:
                delay = answer.retry_after
            await self.destinations.failed(
                d.id,
                self.holder,
                attempts,
                failing_since,
                now + int(delay * 1000),
                answer.text[:1000],
                now,
            )
            metrics.RETRIES.labels(str(d.id)).inc()
            await self._sleep(d.id, delay, cursor)

    async def _sleep(self, destination_id: int, seconds: float, cursor: int) -> None:
        """Wait before a retry, renewing the lease as it goes."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), min(left, self.s.lease_ttl / 3))
            await self._renew(destination_id, cursor)


def deliver(config: Settings, say: Callable[[str], None]) -> None:
    """Deliver every destination until SIGTERM or SIGINT, or until the process that spawned
    this one has ended (the delivery process of a `pier serve` killed with -9): `pier
    deliver`, and the delivery process. `say` tells who delivers. It runs `delivery_nice`
    below the processes that ingest: its work can wait, their answers cannot (with the CPU
    short, ingestion lost less to delivery in the (d) benchmark; docs/performance.md)."""
    import signal

    from ..store import opened

    os.nice(config.delivery_nice)

    async def run() -> None:
        async with opened(config.database_url) as store:
            deliverer = Deliverer(store, Pacing.of(config))
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, deliverer.stop_soon)
            when_parent_gone(deliverer.stop_soon)
            say(f"delivering as {deliverer.holder}")
            await deliverer.run_until_stopped()

    asyncio.run(run())


def main(config: Settings) -> None:
    """The delivery process's entry point (spawned by `pier serve`), logging as the workers
    do; it stops on SIGTERM, or when `pier serve` is gone (killed with no time to stop it).
    Spawned, it imports this module and what it runs, not the CLI."""
    import logging.config

    from ..process import logs

    logging.config.dictConfig(logs.config(config.log_format, logs.LEVELS[config.log_level]))
    deliver(config, log.info)
