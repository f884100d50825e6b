"""Tests for the throwaway PostgreSQL harness in tests/support/postgres.py."""

# Fixture parameters shadow the imported fixture functions (the usual pytest pattern).
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

# The fixtures are imported so this module works on its own; it still shares the one
# session server with tests/conftest.py's pg_server.
from .postgres import (  # noqa: F401
    ENV_BINDIR,
    ENV_REQUIRE,
    PostgresServer,
    pg_server,
    pg_url,
    postgres_available,
    start_server_or_skip,
)


async def _roundtrip(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE contact (id int PRIMARY KEY, email text NOT NULL)")
        await conn.executemany(
            "INSERT INTO contact (id, email) VALUES ($1, $2)",
            [(1, "a@example.com"), (2, "b@example.com"), (3, "c@example.com")],
        )
        rows = await conn.fetch("SELECT id, email FROM contact ORDER BY id")
        return [(r["id"], r["email"]) for r in rows]
    finally:
        await conn.close()


def test_create_insert_read_back(pg_url: str) -> None:
    assert asyncio.run(_roundtrip(pg_url)) == [
        (1, "a@example.com"),
        (2, "b@example.com"),
        (3, "c@example.com"),
    ]


async def _describe(url: str) -> tuple[str, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        return await conn.fetchval("SELECT current_database()"), [t[0] for t in tables]
    finally:
        await conn.close()


def test_databases_are_distinct_and_empty(pg_server: PostgresServer, pg_url: str) -> None:
    other_url = pg_server.create_database()
    try:
        assert other_url != pg_url
        asyncio.run(_roundtrip(pg_url))
        name, tables = asyncio.run(_describe(pg_url))
        other_name, other_tables = asyncio.run(_describe(other_url))
        assert name != other_name
        assert tables == ["contact"]
        assert other_tables == []  # the table made in pg_url is not visible here
    finally:
        pg_server.drop_database(other_url.rsplit("/", 1)[1])


_seen_databases: set[str] = set()


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_a_fresh_database(pg_url: str, run: int) -> None:
    name, tables = asyncio.run(_describe(pg_url))
    assert tables == []
    assert name not in _seen_databases
    _seen_databases.add(name)
    asyncio.run(_roundtrip(pg_url))  # leaves a table behind; the next run must not see it


def test_drop_database_with_open_connection(pg_server: PostgresServer) -> None:
    url = pg_server.create_database()
    name = url.rsplit("/", 1)[1]

    async def check() -> int:
        conn = await asyncpg.connect(url)  # left open on purpose: dropped WITH (FORCE)
        try:
            await asyncio.to_thread(pg_server.drop_database, name)
        finally:
            conn.terminate()
        admin = await asyncpg.connect(pg_server.url)
        try:
            return await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
        finally:
            await admin.close()

    assert asyncio.run(check()) == 0


def test_create_database_from_template(pg_server: PostgresServer) -> None:
    template_url = pg_server.create_database()
    asyncio.run(_roundtrip(template_url))
    template = template_url.rsplit("/", 1)[1]
    clone_url = pg_server.create_database(template=template)
    try:
        assert asyncio.run(_describe(clone_url))[1] == ["contact"]
    finally:
        pg_server.drop_database(clone_url.rsplit("/", 1)[1])
        pg_server.drop_database(template)


def test_server_settings_and_unix_socket(pg_server: PostgresServer) -> None:
    async def check() -> dict[str, str]:
        conn = await asyncpg.connect(
            host=str(pg_server.socket_dir), port=pg_server.port, user="pier", database="postgres"
        )
        try:
            names = ["max_connections", "listen_addresses", "TimeZone", "server_encoding"]
            shown = {n: await conn.fetchval(f"SHOW {n}") for n in names}
            shown["user"] = await conn.fetchval("SELECT current_user")
            shown["superuser"] = await conn.fetchval("SHOW is_superuser")
            return shown
        finally:
            await conn.close()

    assert asyncio.run(check()) == {
        "max_connections": "200",
        "listen_addresses": "127.0.0.1",
        "TimeZone": "UTC",
        "server_encoding": "UTF8",
        "user": "pier",
        "superuser": "on",
    }
    assert pg_server.url == f"postgresql://pier@127.0.0.1:{pg_server.port}/postgres"


def test_stop_removes_everything() -> None:
    with start_server_or_skip() as server:
        base_dir = server.base_dir
        assert base_dir is not None and (base_dir / "data" / "postmaster.pid").exists()
    assert not base_dir.exists()
    server.stop()  # idempotent


def test_missing_binaries_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BINDIR, "/nonexistent")
    available, reason = postgres_available()
    assert not available
    assert "/nonexistent" in reason


def _run_pytest_without_binaries(tmp_path: Path, require: bool) -> subprocess.CompletedProcess[str]:
    # A separate pytest run of one test that needs pg_url, with the binaries hidden.
    (tmp_path / "test_needs_pg.py").write_text(
        "from support.postgres import pg_server, pg_url  # noqa: F401\n\n\n"
        "def test_needs_pg(pg_url):\n    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV_REQUIRE}
    env.update(
        {
            ENV_BINDIR: "/nonexistent",
            "PATH": os.path.dirname(sys.executable),  # no initdb / pg_config on PATH
            # tests/, so that `support.postgres` imports
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
            ),
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # fast start-up
        }
    )
    if require:
        env[ENV_REQUIRE] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_needs_pg.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_fixture_skips_without_binaries(tmp_path: Path) -> None:
    proc = _run_pytest_without_binaries(tmp_path, require=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout, proc.stdout
    assert "/nonexistent" in proc.stdout, proc.stdout  # the reason is shown


def test_fixture_fails_without_binaries_when_required(tmp_path: Path) -> None:
    proc = _run_pytest_without_binaries(tmp_path, require=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 error" in proc.stdout, proc.stdout
    assert ENV_REQUIRE in proc.stdout, proc.stdout
