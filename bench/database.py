"""The benchmark's fresh database: a temporary SQLite file, or a temporary PostgreSQL database."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pier.domain.feed import RESERVED_EVENT_NAMES


@dataclass
class BenchDatabase:
    url: str
    kind: str  # "sqlite" or "postgresql"
    admin_url: str | None = None  # PostgreSQL: where the temporary database was created
    name: str | None = None  # PostgreSQL: the temporary database to drop at the end


def prepare(url: str | None, workdir: Path, fresh: bool) -> BenchDatabase:
    """A new SQLite file in workdir, or for a PostgreSQL URL a new database on that server
    (unless fresh is False: then the URL is used as it is)."""
    if url is None:
        return BenchDatabase(url=f"sqlite:///{workdir / 'pier.db'}", kind="sqlite")
    scheme = urlsplit(url).scheme
    if scheme.startswith("sqlite"):
        return BenchDatabase(url=url, kind="sqlite")
    if not scheme.startswith("postgres"):
        raise SystemExit(f"unsupported database URL scheme: {scheme!r}")
    if not fresh:
        return BenchDatabase(url=url, kind="postgresql")
    name = "pier_bench_" + secrets.token_hex(4)
    asyncio.run(_pg_execute(url, f'CREATE DATABASE "{name}"'))
    return BenchDatabase(url=_with_db(url, name), kind="postgresql", admin_url=url, name=name)


def drop(db: BenchDatabase) -> None:
    """Drop the temporary PostgreSQL database, if one was made (SQLite files go with workdir)."""
    if db.admin_url and db.name:
        asyncio.run(_pg_execute(db.admin_url, f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)'))


# Pier's own feed items (`user_created`, `user_updated`... for each new user) share the events
# table: they are not events the benchmark sent.
COUNT_SQL = "SELECT count(*) FROM events WHERE name NOT IN ({})".format(
    ", ".join(f"'{name}'" for name in sorted(RESERVED_EVENT_NAMES))
)


def count_events(db: BenchDatabase) -> int | None:
    """Events the clients sent that are in the events table, or None when it cannot be read."""
    try:
        if db.kind == "sqlite":
            path = sqlite_path(db.url)
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                return int(conn.execute(COUNT_SQL).fetchone()[0])
        return int(asyncio.run(_pg_fetchval(db.url, COUNT_SQL)))
    except Exception:  # noqa: BLE001 - a missing check is reported, not fatal
        return None


def scalar(db: BenchDatabase, sql: str) -> int:
    """One integer read from the database (no parameters)."""
    if db.kind == "sqlite":
        with sqlite3.connect(f"file:{sqlite_path(db.url)}?mode=ro", uri=True) as conn:
            return int(conn.execute(sql).fetchone()[0])
    return int(asyncio.run(_pg_fetchval(db.url, sql)))


def sqlite_path(url: str) -> str:
    """sqlite:////abs/path -> /abs/path; sqlite:///rel -> rel."""
    return url.split("://", 1)[1][1:]


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _pg_execute(url: str, sql: str) -> None:
    import asyncpg  # only needed with PostgreSQL

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _pg_fetchval(url: str, sql: str) -> object:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()
