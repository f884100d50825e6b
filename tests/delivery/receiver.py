"""Test helpers of delivery: a receiver that is a real HTTP server (a thread of the test process)
recording what it gets and answering as told, and a delivery engine run on a thread of its own
(as `pier deliver` would, with its own connections to the database)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest

from conftest import Tenant, db_call
from pier.delivery.engine import Deliverer
from pier.delivery.pacing import Pacing
from pier.store import make_store
from pier.store.destinations import Destinations

# short backoff for tests: settings of the engine, not test hacks
FAST = Pacing(
    backoff_base=0.02,
    backoff_cap=0.1,
    timeout=2.0,
    lease_ttl=3.0,
    scan_every=0.1,
    poll_every=0.02,
    drain=2.0,
)


@dataclass
class Got:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self):  # type: ignore[no-untyped-def]
        return msgspec.json.decode(self.body)


Answer = tuple[int, dict[str, str], bytes | Iterator[bytes]]  # a body, or its chunks
Decide = Callable[[Got, int], Answer | None]  # None: 200 with an empty body


@dataclass
class Receiver:
    decide: Decide = lambda got, n: None  # noqa: E731
    delay: float = 0.0  # seconds before answering (a slow receiver)
    port: int = 0  # 0: any free port
    got: list[Got] = field(default_factory=list)
    answered: list[tuple[Got, int]] = field(default_factory=list)
    streamed: int = 0  # bytes of streamed answers written

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                got = Got(self.command, self.path, dict(self.headers), body, time.monotonic())
                n = len(receiver.got)
                receiver.got.append(got)
                if receiver.delay:
                    time.sleep(receiver.delay)
                status, headers, answer = receiver.decide(got, n) or (200, {}, b"")
                receiver.answered.append((got, status))
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    if isinstance(answer, bytes):
                        self.send_header("Content-Length", str(len(answer)))
                        self.end_headers()
                        self.wfile.write(answer)
                    else:
                        self.send_header("Content-Length", str(10 * 2**30))
                        self.end_headers()
                        for chunk in answer:
                            self.wfile.write(chunk)
                            receiver.streamed += len(chunk)
                except OSError:
                    pass  # the client gave up (timeout)

            do_POST = do_DELETE = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self) -> list[Got]:
        return [g for g, status in self.answered if 200 <= status < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiver(decide: Decide | None = None, delay: float = 0.0, port: int = 0) -> Iterator[Receiver]:
    r = Receiver(decide or (lambda got, n: None), delay, port=port)
    try:
        yield r
    finally:
        r.close()


@contextmanager
def delivering(database_url: str, settings: Pacing = FAST) -> Iterator[Deliverer]:
    """A delivery engine on a thread with its own event loop and store, until the block ends."""
    ready = threading.Event()
    holder: dict[str, object] = {}

    def main() -> None:
        async def run() -> None:
            store = make_store(database_url)
            await store.open()
            try:
                deliverer = Deliverer(store, settings)
                holder["deliverer"], holder["loop"] = deliverer, asyncio.get_running_loop()
                ready.set()
                await deliverer.run_until_stopped()
            finally:
                await store.close()

        asyncio.run(run())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(20)
    deliverer = holder["deliverer"]
    loop = holder["loop"]
    try:
        yield deliverer  # type: ignore[misc]
    finally:
        loop.call_soon_threadsafe(deliverer.stop_soon)  # type: ignore[attr-defined]
        thread.join(30)


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def pause_afterwards(tenant: Tenant):  # type: ignore[no-untyped-def]
    """The test's destinations are paused after it: the next test's engine leaves them be."""
    yield

    async def action(store):  # type: ignore[no-untyped-def]
        ds = Destinations(store)
        for d in await ds.of_project(tenant.id):
            await ds.set_state(d.id, "paused")

    db_call(tenant.server.database_url, action)
