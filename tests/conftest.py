"""Shared fixtures: a real Pier server on a real socket, per storage backend, and a fresh
project with a public and a secret key for each test (projects isolate tests from each other)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from pier.app import create_app
from pier.clock import now_ms
from pier.commands import create_key
from pier.domain.keys import PUBLIC, SECRET
from pier.settings import Settings
from pier.store import make_store
from pier.store.sqlite import SqliteStore
from pier.writer import Writer
from support.postgres import pg_server  # noqa: F401  (fixture)

BACKENDS = ["sqlite", "postgres"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving Pier in a background thread, on a free port of 127.0.0.1."""

    def __init__(self, database_url: str, **settings: Any) -> None:
        """`settings`: the settings that differ from the defaults (pier/settings.py). It does
        not deliver destinations unless told (`deliver=True`): tests run their own engine."""
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(Settings(database_url=database_url, **{"deliver": False, **settings}))
        self.state = app.app.state  # the Starlette app's: its settings, its login throttle
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("Pier did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


async def sqlite_writer(path: Path, on_loop: bool = False) -> tuple[SqliteStore, int, Writer]:
    """A SQLite store at `path`, opened and migrated, a project in it, and a Writer over the
    store, not started (run_batch, or start())."""
    store = SqliteStore(f"sqlite:///{path}", str(path), on_loop=on_loop)
    await store.open()
    await store.migrate()
    pid = (await store.create_project("p", now_ms())).id
    return store, pid, Writer(store)


def db_call(url: str, action):  # type: ignore[no-untyped-def]
    """Run `action(store)` on a store of our own (another connection to the same database)."""

    async def main():  # type: ignore[no-untyped-def]
        store = make_store(url)
        await store.open()
        try:
            await store.migrate()
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(main())


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/pier.db"
    return request.getfixturevalue("pg_server").create_database()


@pytest.fixture(scope="session")
def server(database_url: str) -> Iterator[LiveServer]:
    live = LiveServer(database_url)
    live.start()
    yield live
    live.stop()


@dataclass
class Tenant:
    """A project on the live server, with HTTP clients carrying its keys."""

    id: int
    public_key: str
    secret_key: str
    public: httpx.Client
    secret: httpx.Client
    server: LiveServer

    def counts(self) -> dict[str, int]:
        return db_call(self.server.database_url, lambda s: s.stats(self.id))

    def user(self, ref: str, by: str = "external_id") -> dict:
        r = self.secret.get(f"/api/client/users/{ref}", params={"by": by})
        assert r.status_code == 200, r.text
        return r.json()

    def events(self, ref: str, by: str = "external_id") -> list[dict]:
        r = self.secret.get(f"/api/client/users/{ref}/events", params={"by": by, "limit": 1000})
        assert r.status_code == 200, r.text
        return r.json()["results"]

    def post(self, path: str, body: object, **kw: object) -> httpx.Response:
        return self.public.post(f"/api/client/{path}", json=body, **kw)  # type: ignore[arg-type]


def make_tenant(server: LiveServer) -> Tenant:
    async def action(store):  # type: ignore[no-untyped-def]
        project = await store.create_project("test", now_ms())
        public = await create_key(store, project.id, PUBLIC, "test public")
        secret = await create_key(store, project.id, SECRET, "test secret")
        return project.id, public, secret

    pid, public, secret = db_call(server.database_url, action)

    def client(key: str) -> httpx.Client:
        return httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    return Tenant(pid, public, secret, client(public), client(secret), server)


@pytest.fixture
def tenant(server: LiveServer) -> Iterator[Tenant]:
    t = make_tenant(server)
    yield t
    t.public.close()
    t.secret.close()


def postgres_required() -> bool:
    return os.environ.get("PIER_REQUIRE_POSTGRES") == "1"
