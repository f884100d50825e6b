"""The SQLite database becomes unwritable mid-load, then writable again: clients get 503 with
Retry-After (never a 204 for data not stored), nothing answered 204 is lost, and the server takes
writes again once the disk does, without a restart.

Two real faults, seen by SQLite as different errors:
- a full disk (ENOSPC, SQLITE_FULL): the database lives on a small tmpfs that a file fills to
  the last block, then is deleted (needs root to mount: skipped otherwise);
- a write error (EFBIG, SQLITE_IOERR): the server's RLIMIT_FSIZE is lowered with prlimit, so
  no file of the process may grow, then raised back.
A read-only file does not work as a fault here: the server keeps its file open, and root (as CI
runs) ignores permission bits.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faults.pierproc import PierProcess, Sent, new_project, stored_message_ids


class Tmpfs:
    """A small tmpfs that is filled up (disk full), then freed.

    Filled by a file that takes every free block, written until the kernel says ENOSPC: the
    disk is then full whatever the server wrote meanwhile. (Shrinking the mount to what it holds
    raced with the server: the WAL grew between measuring and remounting, and the kernel
    refuses to shrink a tmpfs below its contents.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")

    def fill(self, server: PierProcess) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            for chunk in (1 << 20, 4096):  # big writes first, then the last blocks one by one
                block = bytes(chunk)
                try:
                    while os.write(fd, block) == chunk:
                        pass
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        finally:
            os.close(fd)
        st = os.statvfs(self.path)
        assert st.f_bavail == 0, f"the tmpfs still has {st.f_bavail} free blocks"

    def free(self, server: PierProcess) -> None:
        self.filler.unlink()

    def remove(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


class FileSizeLimit:
    """RLIMIT_FSIZE of the process that writes (the writer process): no file it writes may
    grow (EFBIG)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()

    def fill(self, server: PierProcess) -> None:
        resource.prlimit(server.writing_pid(), resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))

    def free(self, server: PierProcess) -> None:
        limit = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        resource.prlimit(server.writing_pid(), resource.RLIMIT_FSIZE, limit)

    def remove(self) -> None:
        pass


@pytest.fixture(params=["enospc-tmpfs", "efbig-rlimit"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tmpfs | FileSizeLimit]:
    kind = Tmpfs if request.param == "enospc-tmpfs" else FileSizeLimit
    fault = kind(tmp_path / "disk")
    yield fault
    fault.remove()


class Clients:
    """Clients that post events and, on a 503, wait and send the same request again."""

    def __init__(self, url: str, key: str, clients: int = 10) -> None:
        self.url, self.key, self.clients = url, key, clients
        self.attempts: list[Sent] = []
        self.stop = False

    def acks(self) -> int:
        return sum(1 for s in self.attempts if s.status == 204)

    def refusals(self) -> list[Sent]:
        return [s for s in self.attempts if s.status != 204]

    async def run(self) -> None:
        await asyncio.gather(*(self._client(c) for c in range(self.clients)))

    async def _client(self, client: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        pad = "x" * 1000
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30) as http:
            for seq in range(5000):  # bounded
                body = [
                    {"name": "e", "external_id": f"u{client}", "message_id": f"c{client}-{seq}-{j}"}
                    | {"data": {"pad": pad}}
                    for j in range(10)
                ]
                for _ in range(200):
                    if self.stop:
                        return
                    sent = Sent(body)
                    r = await http.post("/api/client/events", json=body)
                    sent.status = r.status_code
                    self.attempts.append(sent)
                    if r.status_code == 204:
                        break
                    assert r.status_code == 503, r.text
                    assert int(r.headers["retry-after"]) >= 1
                    await asyncio.sleep(0.02)  # an SDK would wait Retry-After; keep it short


async def until(condition, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("workers", ["1", "2"])  # one process; workers and the writer process
def test_unwritable_database_answers_503_loses_nothing_and_recovers(
    disk: Tmpfs | FileSizeLimit, tmp_path: Path, workers: str
) -> None:
    url = f"sqlite:///{disk.path}/pier.db"
    project = new_project(url)
    server = PierProcess(url, tmp_path / "server.log", "--workers", workers)
    clients = Clients(server.url, project.public_key)
    secret = {"Authorization": f"Bearer {project.secret_key}"}

    async def scenario() -> None:
        load = asyncio.create_task(clients.run())
        try:
            await until(lambda: clients.acks() >= 50, "acks before the fault")
            disk.fill(server)
            await until(lambda: len(clients.refusals()) >= 30, "503s while the disk is full")
            async with httpx.AsyncClient(base_url=server.url, headers=secret) as http:
                r = await http.get("/api/client/users/u0")  # reads still work
                assert r.status_code == 200, r.text
            acked_when_full = clients.acks()
            disk.free(server)
            await until(lambda: clients.acks() >= acked_when_full + 50, "acks after recovery")
        finally:
            clients.stop = True
            await asyncio.wait_for(load, 30)

    try:
        asyncio.run(scenario())
        assert server.terminate() == 0
    finally:
        server.kill()

    stored = stored_message_ids(url, project.id)  # read after the server stopped
    statuses = Counter(s.status for s in clients.attempts)
    assert set(statuses) == {204, 503}, statuses
    assert set(stored.values()) == {1}, "an event was stored twice"
    last: dict[str, Sent] = {}
    for s in clients.attempts:
        present = {stored.get(i, 0) for i in s.ids}
        if s.status == 204:
            assert present == {1}, "an answered event was lost"
        assert len(present) == 1, "half a request was stored"
        last[s.ids[0]] = s
    for s in last.values():  # refused and not retried since: a 503 stored nothing
        if s.status == 503:
            assert not any(i in stored for i in s.ids), "a request answered 503 was stored"
