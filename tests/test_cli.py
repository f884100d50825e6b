"""The `pier` command line, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner

from pier.cli import main


def pier(url: str, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--database-url", url])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_projects_and_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/pier.db"
    pid = pier(url, "projects", "create", "Shop")
    assert pid == "1"
    public = pier(url, "keys", "create", "--project", pid, "--scope", "public", "--name", "app")
    secret = pier(url, "keys", "create", "--project", pid, "--scope", "secret")
    assert public.startswith("pk_") and len(public) == 35
    assert secret.startswith("sk_") and len(secret) == 35
    listing = pier(url, "keys", "list", "--project", pid)
    assert public in listing and secret not in listing
    assert "app" in listing and "secret" in listing
    pier(url, "keys", "revoke", public)
    pier(url, "keys", "revoke", "2")
    rows = sqlite3.connect(tmp_path / "pier.db").execute("SELECT revoked_at FROM keys").fetchall()
    assert all(r[0] is not None for r in rows)
    assert "Shop" in pier(url, "projects", "list")


def test_unknown_project_and_key_fail(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/pier.db"
    runner = CliRunner()
    r = runner.invoke(
        main, ["keys", "create", "--project", "9", "--scope", "public", "--database-url", url]
    )
    assert r.exit_code != 0 and "no project" in r.output
    r = runner.invoke(main, ["keys", "revoke", "pk_nope", "--database-url", url])
    assert r.exit_code != 0


def test_database_url_from_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PIER_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    result = CliRunner().invoke(main, ["projects", "create", "x"])
    assert result.exit_code == 0
    assert (tmp_path / "env.db").exists()


def test_demo_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/pier.db"
    first = pier(url, "demo")
    second = pier(url, "demo")
    public = [line for line in first.splitlines() if line.startswith("Public key")]
    assert public and public[0] in second
    assert "Secret key:      sk_" in first and "sk_" not in second.split("Secret key:")[1][:30]
