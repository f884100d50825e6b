"""The shared statements (store/queries.py): each one, as its dialect renders it, is valid SQL
against the migrated schema of its backend, including those few tests reach."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

from pier.store.postgres import PostgresStore
from pier.store.queries import POSTGRES, SQLITE, Queries
from pier.store.sqlite import SqliteStore
from support.postgres import PostgresServer


def statements(q: Queries) -> Iterator[tuple[str, str]]:
    """(name, SQL) of every statement of a rendered Queries."""
    for name, value in vars(q).items():
        if isinstance(value, str):
            yield name, value
        elif isinstance(value, dict):
            yield from ((f"{name}[{k!r}]", sql) for k, sql in value.items())
        elif isinstance(value, tuple):
            yield from ((f"{name}[{i}]", sql) for i, sql in enumerate(value))


def test_every_statement_compiles_on_sqlite(tmp_path: Path) -> None:
    store = SqliteStore("sqlite:///x", str(tmp_path / "pier.db"))

    async def main() -> None:
        await store.open()
        try:
            await store.migrate()
            for name, sql in statements(Queries(SQLITE)):
                assert "{" not in sql and "$" not in sql, name
                numbered = [int(n) for n in re.findall(r"\?(\d+)", sql)]
                count = max(numbered) if numbered else sql.count("?")
                store.ro.execute(f"EXPLAIN {sql}", (None,) * count)  # compiles, runs nothing
        finally:
            await store.close()

    asyncio.run(main())


def test_every_statement_prepares_on_postgres(pg_server: PostgresServer) -> None:
    store = PostgresStore(pg_server.create_database())

    async def main() -> None:
        await store.open()
        try:
            await store.migrate()
            async with store.pool.acquire() as conn:
                for name, sql in statements(Queries(POSTGRES)):
                    assert "{" not in sql, name
                    await conn.prepare(sql)  # parsed, typed and planned against the schema
        finally:
            await store.close()

    asyncio.run(main())


def test_sqlite_parameters_stay_plain_when_in_order() -> None:
    assert SQLITE.render("SELECT $1, $2 WHERE x {any[3]}") == (
        "SELECT ?, ? WHERE x IN (SELECT value FROM json_each(?))"
    )
    assert SQLITE.render("SELECT $1 WHERE a = $2 OR b = $2") == ("SELECT ?1 WHERE a = ?2 OR b = ?2")
    assert POSTGRES.render("SELECT d{text} WHERE x {any[2]}") == (
        "SELECT d::text WHERE x = ANY($2)"
    )
