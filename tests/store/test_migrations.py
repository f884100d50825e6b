"""Migrations: a version table, applied once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from pier.store import make_store
from pier.store.migrations import migrations


def test_migrations_apply_once_and_are_recorded(tmp_path: Path) -> None:
    async def migrate() -> list[int]:
        store = make_store(f"sqlite:///{tmp_path}/nested/dir/pier.db")
        await store.open()
        try:
            return await store.migrate()
        finally:
            await store.close()

    versions = [v for v, _, _ in migrations("sqlite")]
    assert asyncio.run(migrate()) == versions
    assert asyncio.run(migrate()) == []
    db = sqlite3.connect(tmp_path / "nested/dir/pier.db")
    assert [r[0] for r in db.execute("SELECT version FROM schema_migrations")] == versions
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
