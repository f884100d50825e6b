"""Storage backends behind one interface (`base.Store`): SQLite (default) and PostgreSQL."""

from __future__ import annotations

import os

from .base import Store, StoreUnavailable

DEFAULT_URL = "sqlite:///pier-data/pier.db"

__all__ = ["DEFAULT_URL", "Store", "StoreUnavailable", "database_url", "make_store"]


def database_url(given: str | None) -> str:
    """The URL from the option, else PIER_DATABASE_URL, else the default SQLite file."""
    return given or os.environ.get("PIER_DATABASE_URL") or DEFAULT_URL


def make_store(url: str, durability: str = "full") -> Store:
    """A store for `url`: sqlite:///relative.db, sqlite:////absolute.db or postgresql://..."""
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStore

        return SqliteStore(url, url[len("sqlite:///") :], durability)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")
