"""Every statement (store/queries.py, store/destinations.py): each one, as its dialect renders
it, is valid SQL against the migrated schema of its backend, including those few tests reach."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pier.store.destinations import DestinationQueries
from pier.store.postgres import PostgresStore
from pier.store.queries import POSTGRES, SQLITE, Queries
from pier.store.sqlite import SqliteStore
from support.postgres import PostgresServer

# each class of statements, rendered per dialect: (class, how many it has at least)
STATEMENT_SETS = pytest.mark.parametrize(
    ("queries", "at_least"),
    [(Queries, 50), (DestinationQueries, 15)],
    ids=["shared", "destinations"],
)


def statements(q: Any) -> Iterator[tuple[str, str]]:
    """(name, SQL) of every statement of a rendered Queries (or DestinationQueries)."""
    for name, value in vars(q).items():
        if isinstance(value, str):
            yield name, value
        elif isinstance(value, dict):
            yield from ((f"{name}[{k!r}]", sql) for k, sql in value.items())
        elif isinstance(value, tuple):
            yield from ((f"{name}[{i}]", sql) for i, sql in enumerate(value))


@STATEMENT_SETS
def test_every_statement_compiles_on_sqlite(tmp_path: Path, queries: Any, at_least: int) -> None:
    store = SqliteStore("sqlite:///x", str(tmp_path / "pier.db"))

    async def main() -> None:
        await store.open()
        try:
            await store.migrate()
            found = list(statements(queries(SQLITE)))
            assert len(found) >= at_least
            for name, sql in found:
                assert "{" not in sql and "$" not in sql, name
                numbered = [int(n) for n in re.findall(r"\?(\d+)", sql)]
                count = max(numbered) if numbered else sql.count("?")
                store.ro.execute(f"EXPLAIN {sql}", (None,) * count)  # compiles, runs nothing
        finally:
            await store.close()

    asyncio.run(main())


@STATEMENT_SETS
def test_every_statement_prepares_on_postgres(
    pg_server: PostgresServer, queries: Any, at_least: int
) -> None:
    store = PostgresStore(pg_server.create_database())

    async def main() -> None:
        await store.open()
        try:
            await store.migrate()
            async with store.pool.acquire() as conn:
                found = list(statements(queries(POSTGRES)))
                assert len(found) >= at_least
                for name, sql in found:
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
