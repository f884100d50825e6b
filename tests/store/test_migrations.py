"""Migrations: a version table, applied once."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from pier.domain.commands import EventIn, TrackEvents
from pier.store import make_store
from pier.store import sqlite as sqlite_queries
from pier.store.migrations import migrations
from pier.store.postgres import PostgresStore
from pier.store.sqlite import SqliteStore
from pier.writer import Writer
from support.postgres import PostgresServer


async def migrate(path: Path) -> list[int]:
    """Migrate the SQLite file at `path`: the versions applied."""
    store = make_store(f"sqlite:///{path}")
    await store.open()
    try:
        return await store.migrate()
    finally:
        await store.close()


def test_migrations_apply_once_and_are_recorded(tmp_path: Path) -> None:
    versions = [v for v, _, _ in migrations("sqlite")]
    assert asyncio.run(migrate(tmp_path / "nested/dir/pier.db")) == versions
    assert asyncio.run(migrate(tmp_path / "nested/dir/pier.db")) == []
    db = sqlite3.connect(tmp_path / "nested/dir/pier.db")
    assert [r[0] for r in db.execute("SELECT version FROM schema_migrations")] == versions
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_json_columns_migrate_with_their_rows(
    pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0004 turns jsonb into json on a database that holds rows: they keep their values."""
    url = pg_server.create_database()
    every = migrations("postgres")

    async def scenario() -> None:
        store = PostgresStore(url)
        await store.open()
        try:
            monkeypatch.setattr("pier.store.postgres.migrations", lambda _: every[:3])
            assert await store.migrate() == [1, 2, 3]
            conn: asyncpg.Connection
            async with store.pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO projects (name, created_at) VALUES ('p', 0);"
                    " INSERT INTO users (project_id, id, external_id, data, created_at, updated_at)"
                    ' VALUES (1, 1, \'u\', \'{"plan": "pro", "n": 1.5}\', 0, 0);'
                    " INSERT INTO devices (project_id, user_id, device_id, created_at, updated_at)"
                    " VALUES (1, 1, 'd', 0, 0);"
                    " INSERT INTO events (project_id, user_id, name, data, created_at, received_at)"
                    " VALUES (1, 1, 'e', '{\"b\": 2, \"a\": [1]}', 0, 0)"
                )
            monkeypatch.setattr("pier.store.postgres.migrations", lambda _: every[:4])
            assert await store.migrate() == [4]
            user = await store.get_user(1, "u", "external_id")
            assert user is not None and user.data == {"plan": "pro", "n": 1.5}
            assert user.devices is not None and user.devices[0].extra == {}
            (event,) = await store.event_feed(1, None, 10)
            assert bytes(event.data) == b'{"a": [1], "b": 2}'  # as jsonb had written it
            async with store.pool.acquire() as conn:
                types = await conn.fetch(
                    "SELECT table_name, column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND column_name IN ('data', 'extra') ORDER BY 1"
                )
            assert [tuple(r) for r in types] == [
                ("devices", "extra", "json"),
                ("events", "data", "json"),
                ("users", "data", "json"),
            ]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_users_list_rows_are_found_by_their_keys(tmp_path: Path) -> None:
    """list_members and list_due have no index by user (migration 0011: each user entering a
    list wrote a page of it): every query that finds a user's rows of them probes their key,
    (list_id, user_id), and none scans a table."""

    asyncio.run(migrate(tmp_path / "pier.db"))
    db = sqlite3.connect(tmp_path / "pier.db")
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert not {"list_members_user", "list_due_user"} & indexes
    q = sqlite_queries.QUERIES
    by_user = {
        "lists_of_user": (q.lists_of_user, (1, 2)),
        "members_of_users": (q.members_of_users, ("[1, 2]", "[3, 4]")),
        "due_of_users": (q.due_of_users, ("[1, 2]", "[3, 4]")),
        **{f"delete_user_rows {i}": (sql, (1, 2)) for i, sql in enumerate(q.delete_user_rows)},
        **{f"delete_members_of {i}": (sql, (1, "[3]")) for i, sql in enumerate(q.delete_members_of)},
    }  # fmt: skip
    for name, (sql, args) in by_user.items():
        plan = " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert not re.search(r"\bSCAN (list_members|list_due|j)\b", plan), (name, plan)
        if "list_" in sql:
            assert "USING PRIMARY KEY (list_id=? AND user_id=?)" in plan, (name, plan)


def test_sqlite_message_ids_leave_the_events_index_for_message_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0013 on a database that holds events with message ids: those up to the user_events
    watermark are in message_ids, the unique index on events is gone, and the writer still
    drops a retry of any of them, indexed or past the watermark, and stores a new one."""
    path = tmp_path / "pier.db"
    every = migrations("sqlite")
    before = [m for m in every if m[0] < 13]
    monkeypatch.setattr("pier.store.sqlite.migrations", lambda _: before)
    asyncio.run(migrate(path))
    db = sqlite3.connect(path)
    db.execute("INSERT INTO projects (name, created_at) VALUES ('p', 0)")
    db.execute(
        "INSERT INTO users (project_id, id, external_id, data, created_at, updated_at)"
        " VALUES (1, 1, 'u', '{}', 0, 0)"
    )
    for i, mid in enumerate(["m1", "m2", None, "m3"]):
        db.execute(
            "INSERT INTO events (project_id, user_id, name, data, created_at, received_at,"
            " message_id) VALUES (1, 1, ?, '{}', 0, 0, ?)",
            (f"e{i}", mid),
        )
    db.execute("UPDATE index_state SET upto = 3 WHERE name = 'user_events'")  # m3 past it
    db.commit()
    db.close()
    monkeypatch.setattr("pier.store.sqlite.migrations", lambda _: every)
    assert asyncio.run(migrate(path)) == [m[0] for m in every if m[0] >= 13]
    db = sqlite3.connect(path)
    assert db.execute("SELECT * FROM message_ids ORDER BY 2").fetchall() == [
        (1, "m1", 1),
        (1, "m2", 2),
    ]
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "events_message_id" not in indexes
    # 0014: message_ids' own watermark, where user_events' was
    assert db.execute("SELECT upto FROM index_state WHERE name = 'message_ids'").fetchone() == (3,)
    db.close()

    async def resend() -> None:
        store = SqliteStore("sqlite://", str(path))
        await store.open()
        try:
            events = [EventIn(None, "u", "again", {}, message_id=m) for m in ("m1", "m3", "m4")]
            await Writer(store).run_batch([TrackEvents(project_id=1, events=events)])
            rows = store.db.execute("SELECT message_id FROM events WHERE name = 'again'")
            assert [r[0] for r in rows] == ["m4"]
        finally:
            await store.close()

    asyncio.run(resend())
