"""The statements that load a batch (store/loading.py, BatchQueries) find their rows by key:
the work they do depends on how many keys the batch names, not on how many rows the tables
hold. A plan that walks a range of an index, or a whole project's part of it, and tests each
entry against the list still answers right, so only the plan or the work shows it:
`seen_message_ids` once searched every message id of the project for each batch (`message_id
IS NOT NULL` beside the list made SQLite take the index by the range `message_id > NULL`), 46
times the CPU of a batch of 10 events with message ids on a table of 60,000 (docs/performance.md,
"Events with message ids"). PostgreSQL did the same with message ids whenever its statistics
said the column held almost none (the last test)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pier.clock import now_ms
from pier.domain.commands import EventIn, TrackEvents
from pier.store import postgres, sqlite, sqlite_index
from pier.store.postgres import SEEN_MESSAGE_IDS, PostgresStore
from pier.store.queries import POSTGRES, SQLITE, Queries
from pier.store.sqlite import SqliteStore
from pier.writer import Writer
from support.postgres import PostgresServer

# the BatchQueries statements SQLite runs, by name (a dict's statements all); its message ids
# are SqliteTx.seen_message_ids' (message_ids and the events past the watermark: the last test)
LOADS = (
    "users_by_external",
    "users_by_anonymous",
    "users_by_id",
    "devices_where",
    "devices_of",
    "anonymous_ids_of",
    "stored_request_keys",
)
LISTED = re.compile(r"(?:\w+\.)?(\w+) IN \(SELECT value FROM json_each")  # a column a list names


def loads(q: Queries) -> list[tuple[str, str]]:
    found = []
    for name in LOADS:
        value = getattr(q, name)
        if isinstance(value, str):
            found.append((name, value))
        else:
            found.extend((f"{name}[{k!r}]", sql) for k, sql in value.items())
    return found


def test_sqlite_loads_search_each_table_by_equality_only(tmp_path: Path) -> None:
    """Every table a load reads is searched, with `=` only (a `>` or `<` in the search is a
    range walked entry by entry; a SCAN is the whole table), and the column the list names
    is one of those searched by `=` (else the search walks what the other columns match)."""

    async def main() -> None:
        store = SqliteStore("sqlite:///x", str(tmp_path / "p.db"))
        await store.open()
        await store.migrate()
        try:
            for name, sql in loads(Queries(SQLITE)):
                numbered = [int(n) for n in re.findall(r"\?(\d+)", sql)]
                count = max(numbered) if numbered else sql.count("?")
                plan = [
                    r[3] for r in store.ro.execute(f"EXPLAIN QUERY PLAN {sql}", (None,) * count)
                ]
                tables = [step for step in plan if "json_each" not in step and "B-TREE" not in step]
                tables = [step for step in tables if step != "LIST SUBQUERY 1"]
                assert tables, (name, plan)
                searched = ""
                for step in tables:
                    assert step.startswith("SEARCH "), (name, plan)
                    search = step[step.index("(") :]
                    assert "=?" in search and not re.search(r"[<>]", search), (name, plan)
                    searched += search
                for column in LISTED.findall(sql):
                    by = "rowid" if column == "id" else column
                    assert f"{by}=?" in searched, (name, column, plan)
        finally:
            await store.close()

    asyncio.run(main())


def test_a_batch_of_events_with_message_ids_costs_the_same_however_many_are_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's VM steps for one batch of 10 events, each with a new message id (as every
    SDK sends), with 500 events stored, then with 20,500: the same work, give or take a level
    of the indexes (a walk of the stored ids, or a scan of the events past the watermark,
    would cost 40 times more the second time). Each batch is followed by a step of the
    indexer, as the writer runs them; passes of 1,000 rows (of both tables), so that most of the message ids
    are in message_ids by then and some pending."""
    monkeypatch.setattr(sqlite, "STEP_EVERY", 0.0)
    monkeypatch.setattr(sqlite_index, "PASS_ROWS", 1_000)
    monkeypatch.setattr(sqlite_index, "MIDS_PASS_ROWS", 1_000)

    async def main() -> None:
        store = SqliteStore("sqlite://", str(tmp_path / "p.db"))
        await store.open()
        await store.migrate()
        try:
            pid = (await store.create_project("p", now_ms())).id
            writer = Writer(store)

            async def events(n: int) -> None:
                for start in range(0, n, 500):
                    batch = [
                        EventIn(None, f"u{i % 50}", "e", {}, None, str(uuid.uuid4()))
                        for i in range(start, min(n, start + 500))
                    ]
                    await writer.run_batch([TrackEvents(project_id=pid, events=batch)])
                    await store.maintain()

            async def measured() -> int:
                counted = [0]

                def count() -> int:
                    counted[0] += 1
                    return 0

                store.db.set_progress_handler(count, 1)
                try:
                    await events(10)
                finally:
                    store.db.set_progress_handler(None, 1)
                return counted[0]

            await events(500)
            await measured()  # statements prepared, users known
            few = await measured()
            await events(20_000)
            many = await measured()
            assert many < 1.5 * few, (few, many)
            indexed = store.db.execute("SELECT count(*) FROM message_ids").fetchone()[0]
            assert indexed >= 15_000  # (the test is not only of pending rows)
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("statistics", ["all NULL", "none"])
def test_postgres_looks_message_ids_up_whatever_its_statistics_say(
    pg_server: PostgresServer, statistics: str
) -> None:
    """100,000 events without message ids, then 2,000 with: the check for 300 ids (the store's
    own statement, as it runs it: a custom plan) looks each one up in events_message_id, and
    no stored id is read and dropped by a filter. "all NULL": ANALYZE ran before the ids came
    (the partial index on (project_id, message_id), believed empty, was read by the project
    alone: PostgreSQL's migration 0013). "none": never analysed, as a new database is until
    autovacuum's first visit; `message_id = ANY($2)` with 300 ids was then taken for the whole
    table, and the check read all of the project's events by the primary key (postgres.py,
    SEEN_MESSAGE_IDS)."""
    url = pg_server.create_database()

    async def main() -> None:
        store = PostgresStore(url)
        await store.open()
        await store.migrate()
        await store.close()
        conn = await asyncpg.connect(url, server_settings={"plan_cache_mode": "force_custom_plan"})
        try:
            analyze = " ANALYZE events;" if statistics == "all NULL" else ""
            await conn.execute(
                "ALTER TABLE events SET (autovacuum_enabled = false);"
                " INSERT INTO projects (name, created_at) VALUES ('p', 0);"
                " INSERT INTO users (project_id, id, external_id, data, created_at, updated_at)"
                " VALUES (1, 1, 'u', '{}', 0, 0);"
                " INSERT INTO events (project_id, user_id, name, data, created_at, received_at)"
                f" SELECT 1, 1, 'e', '{{}}', 0, 0 FROM generate_series(1, 100000);{analyze}"
                " INSERT INTO events (project_id, user_id, name, data, created_at, received_at,"
                " message_id) SELECT 1, 1, 'e', '{}', 0, 0, md5(g::text)"
                " FROM generate_series(1, 2000) g"
            )
            sql = "EXPLAIN (ANALYZE, FORMAT JSON) " + SEEN_MESSAGE_IDS
            ids = [str(uuid.uuid4()) for _ in range(299)] + [hashlib_md5("7")]
            plan = json.loads(await conn.fetchval(sql, 1, ids))[0]["Plan"]
            scans = [n for n in nodes(plan) if "Relation Name" in n or "Index Name" in n]
            assert all(n.get("Relation Name", "events") == "events" for n in scans), plan
            searches = [n for n in scans if "Index Name" in n]  # no Seq Scan: all by an index
            assert len(searches) == len(scans) - sum("Bitmap Heap" in n["Node Type"] for n in scans)
            assert all(n["Index Name"] == "events_message_id" for n in searches), plan
            assert all("message_id" in n["Index Cond"] for n in searches), plan
            assert removed_by_filter(plan) == 0, plan
            rows = await conn.fetch(SEEN_MESSAGE_IDS, 1, ids)
            assert [r[0] for r in rows] == [hashlib_md5("7")]
        finally:
            await conn.close()

    asyncio.run(main())


def test_postgres_gives_a_new_table_its_first_statistics_so_loads_look_keys_up(
    pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200,000 users with an anonymous id each in a new database, autovacuum off for the
    tables (as before its first visit). Without statistics, PostgreSQL takes a list of 300 keys
    for the whole table, so the loads of users by external and by anonymous id read every
    user of the project and drop all but a few by a filter. After the store's upkeep (maintain:
    postgres.FIRST_ANALYZE_ROWS), the tables have statistics and both loads look each key up.
    A table with fewer changed rows is left to autovacuum."""
    monkeypatch.setattr(postgres, "FIRST_ANALYZE_EVERY", 0.0)
    url = pg_server.create_database()
    tables = ("users", "user_anonymous_ids", "devices")
    q = Queries(POSTGRES)
    loads = {
        "external": (q.users_by_external[False], [f"u{i * 7 + 1}" for i in range(300)]),
        "anonymous": (q.users_by_anonymous[False], [f"a{i * 7 + 1}" for i in range(300)]),
    }

    async def filtered(conn: asyncpg.Connection) -> dict[str, int]:
        found = {}
        for name, (sql, keys) in loads.items():
            plan = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, 1, keys)
            found[name] = removed_by_filter(json.loads(plan)[0]["Plan"])
            assert len(await conn.fetch(sql, 1, keys)) == 300
        return found

    async def analysed(conn: asyncpg.Connection) -> set[str]:
        rows = await conn.fetch(
            "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL"
        )
        return {r[0] for r in rows}

    async def main() -> None:
        store = PostgresStore(url)
        await store.open()
        await store.migrate()
        conn = await asyncpg.connect(url)  # closed at once: its counts reach the statistics
        try:
            await conn.execute(
                "".join(f"ALTER TABLE {t} SET (autovacuum_enabled = false); " for t in tables)
                + "INSERT INTO projects (name, created_at) VALUES ('p', 0);"
                " INSERT INTO users (project_id, id, external_id, data, created_at, updated_at)"
                " SELECT 1, g, 'u' || g, '{}', 0, 0 FROM generate_series(1, 200000) g;"
                " INSERT INTO user_anonymous_ids (project_id, anonymous_id, user_id)"
                " SELECT 1, 'a' || g, g FROM generate_series(1, 200000) g;"
                " INSERT INTO devices (project_id, user_id, device_id, extra, created_at,"
                " updated_at) SELECT 1, g, 'd' || g, '{}', 0, 0 FROM generate_series(1, 10) g"
            )
            await conn.close()
            conn = await asyncpg.connect(
                url, server_settings={"plan_cache_mode": "force_custom_plan"}
            )
            before = await filtered(conn)
            # the premise: without statistics each load reads the whole project
            assert min(before.values()) >= 100_000, before
            deadline = time.monotonic() + 30
            while {"users", "user_anonymous_ids"} - await analysed(conn):
                assert time.monotonic() < deadline, await analysed(conn)
                await store.maintain()
                if store._analysing is not None:
                    await store._analysing
                await asyncio.sleep(0.2)
            assert await filtered(conn) == {"external": 0, "anonymous": 0}
            assert "devices" not in await analysed(conn)
        finally:
            await conn.close()
            await store.close()

    asyncio.run(main())


def test_postgres_tries_a_first_analyze_once_where_its_role_may_not(
    pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A role that does not own the tables (PostgreSQL answers its ANALYZE with a warning, and
    gathers nothing): the store tries each table once, not at every look."""
    monkeypatch.setattr(postgres, "FIRST_ANALYZE_EVERY", 0.0)
    url = pg_server.create_database()
    role = f"pier_guest_{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        owner = PostgresStore(url)
        await owner.open()
        await owner.migrate()
        await owner.close()
        conn = await asyncpg.connect(url)  # closed at once: its counts reach the statistics
        await conn.execute(
            f"CREATE ROLE {role} LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES"
            f" IN SCHEMA public TO {role};"
            " ALTER TABLE users SET (autovacuum_enabled = false);"
            " INSERT INTO projects (name, created_at) VALUES ('p', 0);"
            " INSERT INTO users (project_id, id, external_id, data, created_at, updated_at)"
            " SELECT 1, g, 'u' || g, '{}', 0, 0 FROM generate_series(1, 5000) g"
        )
        await conn.close()
        conn = await asyncpg.connect(url)
        guest = PostgresStore(url.replace("://pier@", f"://{role}@", 1))
        await guest.open()
        try:
            deadline = time.monotonic() + 30
            while "users" not in guest._analysed:
                assert time.monotonic() < deadline
                await guest.maintain()
                await asyncio.sleep(0.2)
                if guest._analysing is not None:
                    await guest._analysing
            for _ in range(3):
                await guest.maintain()
                if guest._analysing is not None:
                    await guest._analysing
            tried = [r for r in caplog.records if r.getMessage().startswith("ANALYZE users:")]
            assert len(tried) == 1
            assert not [r for r in caplog.records if r.levelname == "ERROR"]
            stats = "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'users'"
            assert await conn.fetchval(stats) is None  # (it was the role's to refuse)
        finally:
            await guest.close()
            await conn.close()

    with caplog.at_level("INFO", logger="pier.store"):
        asyncio.run(main())


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", ()):
        found += nodes(child)
    return found


def hashlib_md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def removed_by_filter(node: dict[str, Any]) -> int:
    return int(node.get("Rows Removed by Filter", 0)) + sum(
        removed_by_filter(child) for child in node.get("Plans", ())
    )
