"""The `pier` command line, on a real SQLite file (and PostgreSQL where the backend matters)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import BACKENDS, Tenant, db_call
from pier.cli import main
from pier.clock import now_ms
from pier.portal.auth import check_password, new_token, token_hash


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


@pytest.mark.parametrize(
    "command",
    [
        ["export"],
        ["keys", "list"],
        ["keys", "create", "--scope", "public"],
        ["lists", "list"],
        ["destinations", "list"],
    ],
)
@pytest.mark.parametrize("project", ["9223372036854775808", "0", "-1"])
def test_a_project_id_out_of_range_is_a_usage_error(
    tmp_path: Path, command: list[str], project: str
) -> None:
    url = f"sqlite:///{tmp_path}/pier.db"
    r = CliRunner().invoke(main, [*command, "--project", project, "--database-url", url])
    assert r.exit_code == 2, r.output  # click's usage error, not a traceback
    assert "--project" in r.output and r.exception is not None
    assert isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("command", [["lists", "show"], ["destinations", "show"]])
def test_an_id_out_of_range_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    url = f"sqlite:///{tmp_path}/pier.db"
    r = CliRunner().invoke(main, [*command, "9223372036854775808", "--database-url", url])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output


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


# -- pier admins ----------------------------------------------------------------------------------
@pytest.fixture(params=BACKENDS)
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/pier.db"
    return request.getfixturevalue("pg_server").create_database()


def admins(url: str, *args: str, password: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["admins", *args, "--database-url", url], input=password)


def login(url: str, email: str) -> str:
    """A session of the admin, as the portal makes one at login; returns its token hash."""

    async def action(store):  # type: ignore[no-untyped-def]
        admin = await store.find_admin(email)
        token = token_hash(new_token())
        await store.create_session(token, admin.id, new_token(), now_ms(), now_ms() + 60_000)
        return token

    return db_call(url, action)


def session_alive(url: str, token: str) -> bool:
    return db_call(url, lambda s: s.get_session(token, now_ms())) is not None


def password_ok(url: str, email: str, password: str) -> bool:
    return db_call(url, lambda s: check_password(s, email, password)) is not None


def test_admins_password_sets_a_new_one_and_ends_their_sessions(any_url: str) -> None:
    for email in ("ann@example.com", "bob@example.com"):
        r = admins(any_url, "create", email, "--password-stdin", password="first password\n")
        assert r.exit_code == 0, r.output
    ann, bob = login(any_url, "ann@example.com"), login(any_url, "bob@example.com")

    r = admins(any_url, "password", "Ann@Example.com", "--password-stdin", password="second one\n")
    assert r.exit_code == 0, r.output
    assert password_ok(any_url, "ann@example.com", "second one")
    assert not password_ok(any_url, "ann@example.com", "first password")
    assert not session_alive(any_url, ann)
    assert session_alive(any_url, bob)  # only that admin's sessions end
    assert password_ok(any_url, "bob@example.com", "first password")

    r = admins(any_url, "password", "ann@example.com", "--password-stdin", password="short\n")
    assert r.exit_code != 0 and "at least 10 characters" in r.output
    assert password_ok(any_url, "ann@example.com", "second one")
    r = admins(any_url, "password", "nobody@example.com", "--password-stdin", password="x" * 12)
    assert r.exit_code != 0 and "no administrator nobody@example.com" in r.output


def test_admins_list_and_remove(any_url: str) -> None:
    for email in ("ann@example.com", "bob@example.com"):
        r = admins(any_url, "create", email, "--password-stdin", password="first password\n")
        assert r.exit_code == 0, r.output
    ann = login(any_url, "ann@example.com")
    listed = admins(any_url, "list").stdout.splitlines()
    assert [line.split("\t")[1] for line in listed] == ["ann@example.com", "bob@example.com"]

    r = admins(any_url, "remove", "ann@example.com")
    assert r.exit_code == 0, r.output
    assert not session_alive(any_url, ann)
    assert not password_ok(any_url, "ann@example.com", "first password")
    listed = admins(any_url, "list").stdout.splitlines()
    assert [line.split("\t")[1] for line in listed] == ["bob@example.com"]

    r = admins(any_url, "remove", "ann@example.com")
    assert r.exit_code != 0 and "no administrator ann@example.com" in r.output
    assert len(admins(any_url, "list").stdout.splitlines()) == 1


def test_lists(tenant: Tenant, tmp_path: Path) -> None:
    """pier lists ...: on the live server's database, with users ingested over HTTP."""
    url, pid = tenant.server.database_url, str(tenant.id)
    for ext, plan in (("ann", "pro"), ("bob", "free")):
        assert (
            tenant.post("identify", {"external_id": ext, "data": {"plan": plan}}).status_code == 204
        )
    rule = {"uuid": "r", "path": "$", "type": "wrapper", "group": "parent", "operator": "and",
            "children": [{"uuid": "p", "type": "string", "group": "user", "path": "$.plan",
                          "operator": "=", "value": "pro"}]}  # fmt: skip
    (tmp_path / "rule.json").write_text(json.dumps(rule))
    dynamic = pier(url, "lists", "create", "--project", pid, "--name", "Pro",
                   "--rule-file", str(tmp_path / "rule.json"))  # fmt: skip
    assert pier(url, "lists", "members", dynamic, "--project", pid) == "ann"
    shown = json.loads(pier(url, "lists", "show", dynamic, "--project", pid))
    assert (shown["state"], shown["users_count"], shown["rule"]) == ("draft", 1, rule)
    static = pier(url, "lists", "create", "--project", pid, "--name", "VIP", "--static")
    pier(url, "lists", "add", static, "ann", "bob", "--project", pid)
    pier(url, "lists", "remove", static, "ann", "--project", pid)
    assert pier(url, "lists", "members", static, "--project", pid) == "bob"
    listing = pier(url, "lists", "list", "--project", pid)
    assert "\tPro\tdynamic\tdraft\t1\t" in listing and "\tVIP\tstatic\tdraft\t1\t" in listing
    # refusals: nothing changes
    bad = CliRunner().invoke(main, ["lists", "add", static, "cat", "--project", pid,
                                    "--database-url", url])  # fmt: skip
    assert bad.exit_code != 0 and "cat" in bad.output
    bad = CliRunner().invoke(main, ["lists", "add", dynamic, "bob", "--project", pid,
                                    "--database-url", url])  # fmt: skip
    assert bad.exit_code != 0 and "dynamic" in bad.output
    (tmp_path / "bad.json").write_text(json.dumps({**rule, "operator": "~"}))
    bad = CliRunner().invoke(main, ["lists", "create", "--project", pid, "--name", "X",
                                    "--rule-file", str(tmp_path / "bad.json"),
                                    "--database-url", url])  # fmt: skip
    assert bad.exit_code != 0 and "/operator" in bad.output
    # Parcelvoy's CSV: users created or updated through the writer, and added, all or none
    (tmp_path / "bad.csv").write_text("external_id,timezone\ncat,UTC\ndan,Mars/Base\n")
    bad = CliRunner().invoke(main, ["lists", "add", static, "--csv", str(tmp_path / "bad.csv"),
                                    "--project", pid, "--database-url", url])  # fmt: skip
    assert bad.exit_code != 0 and "/rows/3/timezone" in bad.output, bad.output
    assert tenant.secret.get("/api/client/users/cat").status_code == 404
    (tmp_path / "vip.csv").write_text(
        "external_id,plan,created_at\ncat,gold,2020-01-02\nann,pro,\n"
    )
    pier(url, "lists", "add", static, "--csv", str(tmp_path / "vip.csv"), "--project", pid)
    # newest users first: cat, created by the import, was created on the CSV's date
    assert pier(url, "lists", "members", static, "--project", pid).split() == ["bob", "ann", "cat"]
    cat = tenant.user("cat")
    assert (cat["data"], cat["created_at"]) == ({"plan": "gold"}, "2020-01-02T00:00:00.000Z")
    bad = CliRunner().invoke(main, ["lists", "add", static, "--project", pid,
                                    "--database-url", url])  # fmt: skip
    assert bad.exit_code == 2 and "--csv" in bad.output
    pier(url, "lists", "delete", static, "--project", pid)
    assert "VIP" not in pier(url, "lists", "list", "--project", pid)
    gone = CliRunner().invoke(main, ["lists", "members", static, "--project", pid,
                                     "--database-url", url])  # fmt: skip
    assert gone.exit_code != 0 and "no list" in gone.output
