"""The statements of store/destinations.py, as each dialect renders them, are valid SQL against
the migrated schema of its backend (as test_queries.py checks the shared ones)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from pier.store.destinations import DestinationQueries
from pier.store.postgres import PostgresStore
from pier.store.queries import POSTGRES, SQLITE
from pier.store.sqlite import SqliteStore
from store.test_queries import statements
from support.postgres import PostgresServer


def test_every_destination_statement_compiles_on_sqlite(tmp_path: Path) -> None:
    store = SqliteStore("sqlite:///x", str(tmp_path / "pier.db"))

    async def main() -> None:
        await store.open()
        try:
            await store.migrate()
            found = list(statements(DestinationQueries(SQLITE)))  # type: ignore[arg-type]
            assert len(found) > 15
            for name, sql in found:
                assert "{" not in sql and "$" not in sql, name
                numbered = [int(n) for n in re.findall(r"\?(\d+)", sql)]
                count = max(numbered) if numbered else sql.count("?")
                store.ro.execute(f"EXPLAIN {sql}", (None,) * count)
        finally:
            await store.close()

    asyncio.run(main())


def test_every_destination_statement_prepares_on_postgres(pg_server: PostgresServer) -> None:
    store = PostgresStore(pg_server.create_database())

    async def main() -> None:
        await store.open()
        try:
            await store.migrate()
            async with store.pool.acquire() as conn:
                for name, sql in statements(DestinationQueries(POSTGRES)):  # type: ignore[arg-type]
                    assert "{" not in sql, name
                    await conn.prepare(sql)
        finally:
            await store.close()

    asyncio.run(main())
