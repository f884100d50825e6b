"""The asyncio client."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from types import TracebackType
from typing import Any

from . import _exit
from ._retry import RetryPolicy
from ._transport import AsyncSender, ErrorCallback, SyncSender, adeliver, deliver
from ._wire import (
    alias_body,
    batch_fits,
    check_options,
    chunks,
    device_body,
    event_bytes,
    identify_body,
)
from .errors import QueueFullError

log = logging.getLogger("pier.client")


class _Flush:
    """Queue marker: send what came before it, then resolve ``done``."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


_STOP = object()  # queue marker: send what came before it, then end the worker


class AsyncClient:
    """Like ``Client``, with coroutines; events are batched by an asyncio task.

    Use one instance from one event loop. Close it with ``await aclose()`` (or ``async with``).
    """

    def __init__(
        self,
        api_key: str,
        host: str = "http://127.0.0.1:8000",
        *,
        max_batch: int = 100,
        flush_interval: float = 0.5,
        max_queue: int = 10000,
        max_retries: int = 5,
        timeout: float = 10.0,
        on_error: ErrorCallback | None = None,
    ) -> None:
        check_options(max_batch, flush_interval, max_queue, max_retries)
        self.max_batch = max_batch
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.on_error = on_error
        self.retry = RetryPolicy(max_retries=max_retries)
        self._options = (api_key, host, timeout)  # for the exit hook's sync sender
        self._sender = AsyncSender(api_key, host, timeout, self.retry)
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending = 0  # events tracked and not yet delivered or reported
        self._batch: list[bytes] = []  # the batch being filled or sent
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        _exit.register(self)

    async def identify(
        self,
        external_id: str | None = None,
        anonymous_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        timezone: str | None = None,
        locale: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Create or update a user. Fields left as ``None`` are not sent (``CLEAR`` clears)."""
        body = identify_body(external_id, anonymous_id, email, phone, timezone, locale, data)
        await self._sender.post("/api/client/identify", body)

    async def alias(self, anonymous_id: str, external_id: str) -> None:
        """Link an anonymous id to an external id."""
        await self._sender.post("/api/client/alias", alias_body(anonymous_id, external_id))

    async def register_device(
        self,
        device_id: str,
        os: str,
        model: str,
        app_build: str,
        app_version: str,
        *,
        external_id: str | None = None,
        anonymous_id: str | None = None,
        token: str | None = None,
        os_version: str | None = None,
        **extra: Any,
    ) -> None:
        """Register or update a device; extra keyword arguments go to the device's ``extra``."""
        body = device_body(
            device_id,
            os,
            model,
            app_build,
            app_version,
            external_id,
            anonymous_id,
            token,
            os_version,
            extra,
        )
        await self._sender.post("/api/client/devices", body)

    async def track(
        self,
        name: str,
        external_id: str | None = None,
        anonymous_id: str | None = None,
        data: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> str:
        """Queue an event and return its ``message_id``. Raises ``QueueFullError`` when
        ``max_queue`` events are waiting."""
        message_id, raw = event_bytes(name, external_id, anonymous_id, data, timestamp)
        if self._closed:
            raise RuntimeError("Pier client is closed")
        if self._pending >= self.max_queue:
            raise QueueFullError(
                f"{self.max_queue} events are waiting to be sent; is the server reachable?"
            )
        self._pending += 1
        self._queue.put_nowait(raw)
        self._start_worker()
        return message_id

    async def flush(self) -> None:
        """Wait until every event queued so far is delivered or reported as failed."""
        if self._pending == 0:
            return
        worker = self._start_worker()
        marker = _Flush()
        self._queue.put_nowait(marker)
        await asyncio.wait({marker.done, worker}, return_when=asyncio.FIRST_COMPLETED)

    async def aclose(self) -> None:
        """Flush, then stop the batching task and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._pending or (self._worker is not None and not self._worker.done()):
            worker = self._start_worker()
            self._queue.put_nowait(_STOP)
            await asyncio.wait({worker})
        await self._sender.close()
        _exit.unregister(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _start_worker(self) -> asyncio.Task[None]:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return self._worker

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        nbytes = sum(map(len, self._batch))
        deadline = loop.time() + self.flush_interval
        while True:
            item = None
            if not self._batch:
                item = await self._queue.get()
            else:
                try:
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        item = await self._queue.get()
                except TimeoutError:
                    pass  # flush_interval has passed
            if isinstance(item, bytes):
                if self._batch and not batch_fits(self._batch, nbytes, item):
                    await self._send()
                if not self._batch:
                    deadline = loop.time() + self.flush_interval
                    nbytes = 0
                self._batch.append(item)
                nbytes += len(item)
                if len(self._batch) < self.max_batch:
                    continue
            await self._send()
            if isinstance(item, _Flush):
                item.done.set_result(None)
            elif item is _STOP:
                return

    async def _send(self) -> None:
        batch = self._batch
        if batch:
            # On cancellation the batch stays in self._batch for the exit hook.
            await adeliver(self._sender, batch, self.on_error)
            self._pending -= len(batch)
            self._batch = []

    def _at_exit(self) -> None:
        """The client was never closed: send what is left, synchronously."""
        events = list(self._batch)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, bytes):
                events.append(item)
        if not events:
            return
        log.warning("Pier: AsyncClient not closed; sending %d event(s) at exit", len(events))
        sender = SyncSender(*self._options, self.retry)
        try:
            for batch in chunks(events, self.max_batch):
                deliver(sender, batch, self.on_error)
        finally:
            sender.close()
