"""Helpers of the fault tests: a `pier serve` subprocess that can be killed, stopped with SIGTERM
and started again on the same database; a project with keys; clients that post events with
message ids and remember what each request was answered; and the stored events by message id."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conftest import db_call, free_port
from pier.clock import now_ms
from pier.commands import create_key
from pier.domain.keys import PUBLIC, SECRET

PIER = str(Path(sys.executable).with_name("pier"))
WRITER_STARTED = re.compile(r"writer process (\d+): serving the workers")


class PierProcess:
    """`pier serve` in its own process group, its output in `log_path`."""

    def __init__(self, database_url: str, log_path: Path, *args: str) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [PIER, "serve", "--port", str(self.port), "--database-url", database_url, *args]
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.kill()
                raise RuntimeError(f"pier serve did not start:\n{self.log()}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def owns(self, pid: int) -> bool:
        """Whether `pid` is this server or one of its processes (the delivery process...)."""
        while pid > 1:
            if pid == self.proc.pid:
                return True
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's pid
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def writer_pids(self) -> list[int]:
        """The writer processes this server started (as they logged), in order."""
        return [int(pid) for pid in WRITER_STARTED.findall(self.log())]

    def writing_pid(self) -> int:
        """The process that commits what is ingested: the (last) writer process, or with one
        worker the server itself."""
        return (self.writer_pids() or [self.pid])[-1]

    def kill(self) -> int:
        """kill -9 the whole process group (what is left of it, if pier serve itself is
        gone); returns the exit status."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def children(self) -> list[int]:
        """The processes pier serve started (its direct children), running now."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    found.append(int(entry.name))
        return found

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then wait for the exit status (kill -9 if it does not come)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise


@dataclass
class Project:
    id: int
    public_key: str
    secret_key: str


def new_project(database_url: str, rate_limit: int | None = None) -> Project:
    async def action(store):  # type: ignore[no-untyped-def]
        project = await store.create_project("faults", now_ms())
        public = await create_key(store, project.id, PUBLIC, "faults public", rate_limit)
        secret = await create_key(store, project.id, SECRET, "faults secret", rate_limit)
        return Project(project.id, public, secret)

    return db_call(database_url, action)


def stored_message_ids(database_url: str, project_id: int) -> collections.Counter[str]:
    """How many stored events carry each message id, read on a connection of our own."""

    async def action(store):  # type: ignore[no-untyped-def]
        counts: collections.Counter[str] = collections.Counter()
        after = None
        while True:
            page = await store.event_feed(project_id, after, 1000)
            if not page:
                return counts
            counts.update(e.message_id for e in page if e.message_id is not None)
            after = page[-1].id

    return db_call(database_url, action)


@dataclass
class Sent:
    """One request of a load client: its message ids and what it was answered."""

    body: list[dict]
    status: int | None = None  # None: no answer (connection refused, reset, timed out)
    answered_at: float = 0.0

    @property
    def ids(self) -> list[str]:
        return [e["message_id"] for e in self.body]


@dataclass
class Load:
    """`clients` clients, each posting batches of events with unique message ids, one request at
    a time on its own connection, until told to stop or a request goes unanswered."""

    key: str
    clients: int = 20
    batch: int = 5
    max_requests: int = 2000  # per client: the loop is bounded even if nothing stops it
    sent: list[Sent] = field(default_factory=list)
    stop: asyncio.Event | None = None

    def body(self, client: int, seq: int) -> list[dict]:
        return [
            {
                "name": "load",
                "external_id": f"client-{client}",
                "message_id": f"c{client}-r{seq}-e{j}",
                "data": {"seq": seq, "j": j},
            }
            for j in range(self.batch)
        ]

    def acked(self) -> list[Sent]:
        return [s for s in self.sent if s.status == 204]

    async def run(self, url: str, until: Callable[[Load], bool], then: Callable[[], None]) -> None:
        """Post until `until(self)` holds, call `then()` (the fault), and wait for the clients
        to see it: each stops at its first request that gets no 204."""
        self.stop = asyncio.Event()
        tasks = [asyncio.create_task(self._client(url, c)) for c in range(self.clients)]
        deadline = time.monotonic() + 60
        while not until(self) and time.monotonic() < deadline and not all(t.done() for t in tasks):
            await asyncio.sleep(0.005)
        assert until(self), "the load never reached the point of the fault"
        then()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

    async def _client(self, url: str, client: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            for seq in range(self.max_requests):
                sent = Sent(self.body(client, seq))
                self.sent.append(sent)
                try:
                    r = await http.post("/api/client/events", json=sent.body)
                    sent.status = r.status_code
                except httpx.TransportError:
                    pass
                sent.answered_at = time.monotonic()
                if sent.status != 204:
                    return


async def retry_until_stored(url: str, key: str, bodies: list[list[dict]]) -> None:
    """What an SDK does with requests that got no 204: send them again until they do."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:

        async def one(body: list[dict]) -> None:
            for _ in range(50):
                r = await http.post("/api/client/events", json=body)
                if r.status_code == 204:
                    return
                assert r.status_code in (429, 503), r.text
                await asyncio.sleep(0.1)
            raise AssertionError("a retried request never got a 204")

        await asyncio.gather(*(one(b) for b in bodies))
