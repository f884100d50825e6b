"""`pier destinations ...` on both backends: bad input refused with a clear message and nothing
created; the life of a destination (add, list, show, pause, resume, replay, dead letters,
redeliver, remove); keys never shown after creation, and sealed at rest with PIER_SECRET_KEY."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from conftest import Tenant, db_call
from delivery.receiver import delivering, pause_afterwards, receiver, wait_for  # noqa: F401
from pier.cli import main
from pier.store.destinations import Destinations


def invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--database-url", url])


def pier(url: str, *args: str) -> Result:
    result = invoke(url, *args)
    assert result.exit_code == 0, result.output
    return result


def listed(tenant: Tenant) -> list[str]:
    out = pier(tenant.server.database_url, "destinations", "list", "--project", str(tenant.id))
    return out.stdout.strip().splitlines()[1:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--kind", "webhook", "--url", "ftp://example.com/x"],
            "--url: url must be an http or https URL",
        ),
        (["--kind", "webhook", "--url", "not a url"], "--url"),
        (
            ["--kind", "carrier-pigeon", "--url", "http://x.test"],
            "--kind: unknown kind 'carrier-pigeon'",
        ),
        (["--kind", "pier", "--url", "http://x.test"], "--key: a pier destination needs --key"),
        (
            ["--kind", "segment", "--url", "http://x.test"],
            "--key: a segment destination needs --key",
        ),
        (
            ["--kind", "webhook", "--url", "http://x.test", "--only", "Order [Paid"],
            "--only: 'Order [Paid' has a '['",
        ),
        (["--kind", "webhook", "--url", "http://x.test", "--skip", ""], "--skip: a glob must hold"),
        (
            ["--kind", "webhook", "--url", "http://x.test", "--batch-size", "0"],
            "--batch-size: batch size",
        ),
        (
            ["--kind", "webhook", "--url", "http://x.test", "--secret-key", "sk_x"],
            "--secret-key: only a pier",
        ),
    ],
)
def test_bad_input_is_refused_and_creates_nothing(
    tenant: Tenant, args: list[str], message: str
) -> None:
    r = invoke(
        tenant.server.database_url, "destinations", "add", "--project", str(tenant.id), *args
    )
    assert r.exit_code != 0
    assert message in r.output
    assert listed(tenant) == []


def test_unknown_project_and_destination(tenant: Tenant) -> None:
    url = tenant.server.database_url
    r = invoke(
        url,
        "destinations",
        "add",
        "--project",
        "999999",
        "--kind",
        "webhook",
        "--url",
        "http://x.test",
    )
    assert r.exit_code != 0 and "no project with id 999999" in r.output
    for command in ("show", "pause", "resume", "remove", "dead-letters"):
        r = invoke(url, "destinations", command, "999999")
        assert r.exit_code != 0 and "no destination 999999" in r.output


def test_life_of_a_destination(tenant: Tenant) -> None:
    url = tenant.server.database_url
    assert tenant.post("events", [{"name": "a", "external_id": "u"}]).status_code == 204
    added = pier(
        url,
        "destinations",
        "add",
        "--project",
        str(tenant.id),
        "--kind",
        "webhook",
        "--url",
        "http://127.0.0.1:9/hook",
        "--name",
        "hook",
        "--only",
        "Order *",
        "--from",
        "now",
    )
    did = added.stdout.strip()
    assert did.isdigit()
    secret = added.output.split("signing secret: ")[1].split()[0]
    assert secret.startswith("whsec_")
    shown = json.loads(pier(url, "destinations", "show", did).stdout)
    assert shown["signing_secret"] == secret[:8] + "…" and secret not in json.dumps(shown)
    assert shown["state"] == "active" and shown["only"] == ["Order *"] and shown["lag_items"] == 0
    assert shown["cursor"] is not None  # --from now: after the items already there
    assert listed(tenant)[0].split("\t")[:4] == [did, "webhook", "active", "hook"]
    pier(url, "destinations", "pause", did)
    assert json.loads(pier(url, "destinations", "show", did).stdout)["state"] == "paused"
    pier(url, "destinations", "resume", did)
    assert json.loads(pier(url, "destinations", "show", did).stdout)["state"] == "active"
    pier(url, "destinations", "replay", did, "--from", "beginning")
    assert json.loads(pier(url, "destinations", "show", did).stdout)["lag_items"] >= 2
    pier(url, "destinations", "replay", did, "--from", "2999-01-01T00:00:00Z")
    assert json.loads(pier(url, "destinations", "show", did).stdout)["lag_items"] == 0
    pier(url, "destinations", "replay", did, "--from", "2000-01-01T00:00:00Z")
    cursor_all = json.loads(pier(url, "destinations", "show", did).stdout)
    assert cursor_all["lag_items"] >= 2 and cursor_all["cursor"] is None
    feed = tenant.secret.get("/api/client/events").json()
    first = feed["results"][0]["id"]
    from pier.api.manage import feed_cursor

    pier(url, "destinations", "replay", did, "--from", feed_cursor(first))
    assert (
        json.loads(pier(url, "destinations", "show", did).stdout)["lag_items"]
        == len(feed["results"]) - 1
    )
    r = invoke(url, "destinations", "replay", did, "--from", "yesterday")
    assert (
        r.exit_code != 0
        and "--from: from must be beginning, a feed cursor or an ISO-8601 time" in r.output
    )
    pier(url, "destinations", "remove", did)
    assert listed(tenant) == []


def test_keys_are_sealed_with_pier_secret_key(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIER_SECRET_KEY", "a long random server secret")
    url = tenant.server.database_url
    did = pier(
        url,
        "destinations",
        "add",
        "--project",
        str(tenant.id),
        "--kind",
        "pier",
        "--url",
        "http://127.0.0.1:9",
        "--key",
        "pk_target_key_value",
        "--secret-key",
        "sk_target_secret_value",
    ).stdout.strip()
    d = db_call(url, lambda s: Destinations(s).get(int(did)))
    assert d.key.startswith("fernet:") and "pk_target_key_value" not in d.key
    assert d.secret_key.startswith("fernet:") and "sk_target" not in d.secret_key
    shown = pier(url, "destinations", "show", did).stdout
    assert (
        "pk_t…" in shown
        and "pk_target_key_value" not in shown
        and "sk_target_secret_value" not in shown
    )
    from pier.delivery.secrets import SecretKeyMissing, unseal

    assert unseal(d.key, "a long random server secret") == "pk_target_key_value"
    with pytest.raises(SecretKeyMissing):
        unseal(d.key, "")
    with pytest.raises(SecretKeyMissing):
        unseal(d.key, "another secret")
    pier(url, "destinations", "pause", did)


def test_dead_letters_and_redeliver(tenant: Tenant) -> None:
    url = tenant.server.database_url
    refuse = {"on": True}

    def decide(got, n):  # type: ignore[no-untyped-def]
        if refuse["on"] and b'"bad":1' in got.body:
            return 422, {}, b"no thanks"
        return None

    body = [
        {"name": "e", "external_id": "u", "data": {"bad": int(i in (2, 5)), "i": i}}
        for i in range(8)
    ]
    assert tenant.post("events", body).status_code == 204
    with receiver(decide) as r:
        did = pier(
            url,
            "destinations",
            "add",
            "--project",
            str(tenant.id),
            "--kind",
            "webhook",
            "--url",
            r.url,
        ).stdout.strip()
        with delivering(url):
            wait_for(
                lambda: json.loads(pier(url, "destinations", "show", did).stdout)["lag_items"] == 0
            )
        pier(url, "destinations", "pause", did)
        rows = pier(url, "destinations", "dead-letters", did).stdout.strip().splitlines()[1:]
        assert len(rows) == 2 and all("422 no thanks" in row for row in rows)
        first = rows[0].split("\t")[0]
        r2 = invoke(url, "destinations", "redeliver", did, "--all")
        assert r2.exit_code != 0 and "failed again" in r2.output  # still refused: they stay
        assert len(pier(url, "destinations", "dead-letters", did).stdout.strip().splitlines()) == 3
        refuse["on"] = False
        out = pier(url, "destinations", "redeliver", did, "--dead-letter", first).stdout
        assert out.startswith(f"{first}\tdelivered")
        pier(url, "destinations", "redeliver", did, "--all")
        assert pier(url, "destinations", "dead-letters", did).stdout.strip().splitlines()[1:] == []
        r3 = invoke(url, "destinations", "redeliver", did)
        assert r3.exit_code != 0 and "either --all or --dead-letter" in r3.output
    redelivered = [
        i["data"]["i"] for g in r.accepted() for i in g.json()["items"] if i["name"] == "e"
    ]
    assert sorted(redelivered) == list(range(8))
