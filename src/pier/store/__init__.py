"""Storage backends behind one interface (`base.Store`): SQLite (default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .base import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable", "make_store", "opened"]


def make_store(url: str, durability: str = "full", on_loop: bool = False) -> Store:
    """A store for `url`: sqlite:///relative.db, sqlite:////absolute.db or postgresql://...
    `on_loop`: SQLite's waits run on the event loop, which does nothing else (SqliteStore)."""
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStore

        return SqliteStore(url, url[len("sqlite:///") :], durability, on_loop)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


@asynccontextmanager
async def opened(url: str, durability: str = "full", on_loop: bool = False) -> AsyncIterator[Store]:
    """The store for `url`, opened and migrated (the CLI's commands, the writer and delivery
    processes), closed at the end."""
    store = make_store(url, durability, on_loop)
    await store.open()
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()
