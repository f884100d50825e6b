"""Errors say what happened: a bug in Pier is a JSON 500 without Retry-After (retrying would fail
the same way), logged with its traceback and request id; a database that cannot serve is a 503
with Retry-After on every route, writes and reads alike, and the server serves again once the
database does. The bugs are injected into Pier's own code; the database faults are real: a
PostgreSQL database that takes no connections and whose sessions are terminated, an SQLite
write lock held by another connection past the busy timeout."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import pier.store.sqlite
from conftest import LiveServer, Tenant, make_tenant
from pier.api import render
from pier.domain.batch import Batch
from pier.process import logs
from support.postgres import PostgresServer

BUG = "injected bug"


class Lines(logging.Handler):
    """Log lines as `pier serve` writes them (api/logs.py), formatted as they are emitted: in
    the request's task, where its id is known."""

    def __init__(self) -> None:
        super().__init__()
        self.formatter_ = logs.JSONFormatter()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.formatter_.format(record))


@pytest.fixture
def error_log() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("uvicorn.error")  # where uvicorn logs an app's exception
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def broken(*args: object, **kwargs: object) -> None:
    raise RuntimeError(BUG)


def assert_bug(r: httpx.Response, error_log: Lines) -> None:
    assert r.status_code == 500, r.text
    assert r.json() == {"status": "error", "error": "internal error"}
    assert "retry-after" not in r.headers
    rid = r.headers["x-request-id"]
    deadline = time.monotonic() + 10  # the answer is sent first, the error logged just after
    while not (logged := [line for line in error_log.lines if rid in line]):
        assert time.monotonic() < deadline, f"no error logged for {rid}: {error_log.lines}"
        time.sleep(0.01)
    assert len(logged) == 1, logged
    assert f"RuntimeError: {BUG}" in logged[0] and "Traceback" in logged[0]


def test_a_bug_in_a_write_is_a_500_without_retry_after(
    tenant: Tenant, error_log: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Batch, "apply", broken)  # the domain cannot handle the command
    for path, body in (
        ("identify", {"external_id": "bug-1"}),
        ("events", [{"name": "e", "external_id": "bug-1"}]),
    ):
        # (uvicorn closes the connection of a request whose app raised, after its answer)
        headers = {"X-Request-ID": f"bug-{path}", "Connection": "close"}
        assert_bug(tenant.post(path, body, headers=headers), error_log)
    monkeypatch.undo()
    assert tenant.post("identify", {"external_id": "bug-1"}).status_code == 204  # not broken


def test_a_bug_in_a_read_is_a_500_without_retry_after(
    tenant: Tenant, error_log: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tenant.post("identify", {"external_id": "bug-2"}).status_code == 204
    monkeypatch.setattr(render, "user", broken)
    r = tenant.secret.get("/api/client/users/bug-2", headers={"Connection": "close"})
    assert_bug(r, error_log)


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["status"] == "error" and "unavailable" in r.json()["error"]


@pytest.fixture
def own_pg(pg_server: PostgresServer) -> Iterator[tuple[PostgresServer, str, LiveServer]]:
    url = pg_server.create_database()
    name = url.rsplit("/", 1)[1].split("?")[0]
    live = LiveServer(url)
    live.start()
    yield pg_server, name, live
    live.stop()
    pg_server.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    pg_server.drop_database(name)


def test_postgres_down_is_a_503_on_writes_and_reads(
    own_pg: tuple[PostgresServer, str, LiveServer],
) -> None:
    pg, name, live = own_pg
    t = make_tenant(live)
    other = make_tenant(live)  # its key is not cached yet: authenticating it reads the database
    assert t.post("identify", {"external_id": "u1"}).status_code == 204
    assert t.secret.get("/api/client/users/u1").status_code == 200
    pg.execute(
        f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false',
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{name}' AND pid <> pg_backend_pid()",
    )
    assert_unavailable(t.post("identify", {"external_id": "u2"}))
    assert_unavailable(t.post("events", [{"name": "e", "external_id": "u2"}]))
    assert_unavailable(t.secret.get("/api/client/users/u1"))
    assert_unavailable(t.secret.get("/api/client/users/u1/events"))
    assert_unavailable(t.secret.get("/api/client/events"))
    assert_unavailable(t.secret.get("/api/client/users"))
    assert_unavailable(t.secret.delete("/api/client/users/u1"))
    assert_unavailable(other.post("identify", {"external_id": "o1"}))
    assert_unavailable(other.secret.get("/api/client/users/o1"))
    pg.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    assert t.post("identify", {"external_id": "u2"}).status_code == 204  # back, no restart
    assert t.secret.get("/api/client/users/u2").status_code == 200
    assert other.post("identify", {"external_id": "o1"}).status_code == 204
    assert t.secret.get("/api/client/users/u9").status_code == 404


def test_sqlite_locked_past_the_busy_timeout_is_a_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pier.store.sqlite, "BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "pier.db"
    live = LiveServer(f"sqlite:///{path}")
    live.start()
    try:
        t = make_tenant(live)
        assert t.post("identify", {"external_id": "u1"}).status_code == 204
        lock = sqlite3.connect(path, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # another process's write transaction, held
        try:
            assert_unavailable(t.post("identify", {"external_id": "u2"}))
            assert_unavailable(t.secret.delete("/api/client/users/u1"))
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert t.post("identify", {"external_id": "u2"}).status_code == 204  # back
        assert t.secret.get("/api/client/users/u1").status_code == 200  # nothing was deleted
    finally:
        live.stop()
