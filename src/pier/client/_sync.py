"""The thread-based client."""

from __future__ import annotations

import queue
import threading
import time
from datetime import datetime
from types import TracebackType
from typing import Any

from . import _exit
from ._retry import RetryPolicy
from ._transport import ErrorCallback, SyncSender, deliver
from ._wire import alias_body, batch_fits, check_options, device_body, event_bytes, identify_body
from .errors import QueueFullError


class _Flush:
    """Queue marker: send what came before it, then set ``done``."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()  # queue marker: send what came before it, then end the worker


class Client:
    """Sends to a Pier server. identify/alias/register_device are synchronous; track() queues
    the event for a background thread that sends batches. Thread-safe."""

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
        self.retry = RetryPolicy(max_retries=max_retries)  # its fields may be tuned later
        self._sender = SyncSender(api_key, host, timeout, self.retry)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._slots = threading.Semaphore(max_queue)  # one per event not yet delivered
        self._lock = threading.Lock()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="pier-client", daemon=True)
        self._worker.start()
        _exit.register(self)

    # Sent right away.

    def identify(
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
        self._sender.post("/api/client/identify", body)

    def alias(self, anonymous_id: str, external_id: str) -> None:
        """Link an anonymous id to an external id."""
        self._sender.post("/api/client/alias", alias_body(anonymous_id, external_id))

    def register_device(
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
        self._sender.post("/api/client/devices", body)

    # Queued and sent in batches.

    def track(
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
        with self._lock:
            if self._closed:
                raise RuntimeError("Pier client is closed")
            if not self._slots.acquire(blocking=False):
                raise QueueFullError(
                    f"{self.max_queue} events are waiting to be sent; is the server reachable?"
                )
            self._queue.put(raw)
        return message_id

    def flush(self) -> None:
        """Block until every event queued so far is delivered or reported as failed."""
        if threading.current_thread() is self._worker:
            raise RuntimeError("flush() cannot be called from on_error")
        if not self._worker.is_alive():
            return
        marker = _Flush()
        self._queue.put(marker)
        while not marker.done.wait(0.5):
            if not self._worker.is_alive():
                return

    def close(self) -> None:
        """Flush, then stop the background thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if threading.current_thread() is not self._worker:
            self._worker.join()
        self._sender.close()
        _exit.unregister(self)

    def _at_exit(self) -> None:
        self.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # The background thread.

    def _run(self) -> None:
        batch: list[bytes] = []
        nbytes = 0
        deadline = 0.0
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if batch else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None  # flush_interval has passed
            if isinstance(item, bytes):
                if batch and not batch_fits(batch, nbytes, item):
                    self._send(batch)
                    batch, nbytes = [], 0
                if not batch:
                    deadline = time.monotonic() + self.flush_interval
                batch.append(item)
                nbytes += len(item)
                if len(batch) < self.max_batch:
                    continue
            self._send(batch)
            batch, nbytes = [], 0
            if isinstance(item, _Flush):
                item.done.set()
            elif item is _STOP:
                return

    def _send(self, batch: list[bytes]) -> None:
        if not batch:
            return
        try:
            deliver(self._sender, batch, self.on_error)
        finally:
            self._slots.release(len(batch))
