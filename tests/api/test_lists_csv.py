"""Parcelvoy's CSV import of a static list (POST /api/client/lists/{id}/users with text/csv, or a
multipart upload as Parcelvoy's UI sends it), on every backend, over real HTTP: users created or
updated through the writer (the feed and dynamic lists see them) and added, all or nothing."""

from __future__ import annotations

from typing import Any

from api.test_lists import PRO, create, members, settled, tree
from conftest import Tenant

CSV = "text/csv"


def static_list(t: Tenant) -> int:
    r = create(t, {"name": "Imported", "type": "static"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def post_csv(t: Tenant, list_id: int, text: str, **kw: Any) -> Any:
    url = f"/api/client/lists/{list_id}/users"
    if "files" in kw:
        return t.secret.post(url, files=kw["files"])
    return t.secret.post(url, content=text.encode(), headers={"Content-Type": CSV})


def feed(t: Tenant) -> list[dict[str, Any]]:
    r = t.secret.get("/api/client/events", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return r.json()["results"]  # type: ignore[no-any-return]


def test_a_csv_creates_and_updates_users_and_adds_them(tenant: Tenant) -> None:
    assert tenant.post("identify", {"external_id": "ann", "data": {"plan": "free", "n": 1}}).status_code == 204  # fmt: skip
    pro = create(tenant, {"name": "Pro", "type": "dynamic", "rule": PRO}).json()["id"]
    settled(tenant, pro)
    list_id = static_list(tenant)
    text = (
        "\ufeffexternal_id,email,timezone,first_name,plan,created_at\r\n"
        "ann,ann@example.com,europe/paris,Ann,pro,2020-01-01\r\n"
        '"bob","","",Bob,"pro, annual",\r\n'
        "\r\n"
    )
    r = post_csv(tenant, list_id, text)
    assert r.status_code == 204, r.text
    assert members(tenant, list_id) == ["ann", "bob"]
    ann = tenant.user("ann")
    assert (ann["email"], ann["timezone"]) == ("ann@example.com", "Europe/Paris")
    assert ann["data"] == {"plan": "pro", "n": 1, "first_name": "Ann"}  # traits patched
    bob = tenant.user("bob")
    assert bob["email"] is None and bob["data"] == {"first_name": "Bob", "plan": "pro, annual"}
    # through the writer: the feed has the changes, the dynamic list follows them
    items = feed(tenant)
    names = [e["name"] for e in items]
    assert names.count("user_created") == 2 and names.count("user_updated") >= 2
    assert members(tenant, pro) == ["ann"]  # "pro, annual" is not "pro"
    # the dynamic list ann entered says so; the static list's changes add no items
    entered = [(e["external_id"], e["data"]["list_id"]) for e in items if e["name"] == "list_entered"]  # fmt: skip
    assert entered == [("ann", pro)] and "list_exited" not in names
    # a second import adds to the members already there
    files = {"file": ("more.csv", b"external_id\ncat\n", "text/csv")}
    assert post_csv(tenant, list_id, "", files=files).status_code == 204
    assert members(tenant, list_id) == ["ann", "bob", "cat"]
    assert tenant.secret.get(f"/api/client/lists/{list_id}").json()["users_count"] == 3


def test_a_bad_csv_is_a_422_naming_row_and_column_and_writes_nothing(tenant: Tenant) -> None:
    list_id = static_list(tenant)
    bad = {
        "email\nann@example.com\n": ["/rows/1"],
        "external_id,plan,plan\nann,a,b\n": ["/rows/1/plan"],
        "external_id\n": ["/rows/2"],
        "external_id,timezone\nann,UTC\nbob,Mars/Base\n,UTC\ncat\n": [
            "/rows/3/timezone",
            "/rows/4/external_id",
            "/rows/5",
        ],
        "external_id,email\nann," + "x" * 300 + "@example.com\n": ["/rows/2/email"],
        # rows are named by the line they start on: a quoted line break, an empty line
        'external_id,note\nann,"two\nlines"\n\nbob,x,y\n': ["/rows/5"],
        "external_id,nick\nann,a\0b\n": ["/rows/2/nick"],
        # created_at: ISO 8601 with an offset, a date alone or epoch ms, as event timestamps
        "external_id,created_at\nann,yesterday\nbob,2020-01-01 10:00\ncat,2999-01-01\n"
        "dan,1999-12-31\neve,99999999999999999999\n": [
            f"/rows/{n}/created_at" for n in range(2, 7)
        ],
        'external_id\n"ann\n': [""],
    }
    for text, paths in bad.items():
        r = post_csv(tenant, list_id, text)
        assert r.status_code == 422, (text, r.text)
        assert [e["path"] for e in r.json()["errors"]] == paths, text
    r = post_csv(tenant, list_id, "external_id,timezone\nann,UTC\nbob,Mars/Base\n")
    message = r.json()["errors"][0]["message"]
    assert message.startswith("row 3, column timezone:"), message
    assert members(tenant, list_id) == []
    assert tenant.secret.get("/api/client/users/ann").status_code == 404  # row 2 was fine
    assert tenant.counts()["users"] == 0
    r = tenant.secret.post(
        f"/api/client/lists/{list_id}/users",
        content=b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--x--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 422 and "no file" in r.json()["error"], r.text
    # a dynamic list: 409; a public key: 403; nothing written either
    dynamic = create(tenant, {"name": "Pro", "type": "dynamic", "rule": PRO}).json()["id"]
    settled(tenant, dynamic)
    assert post_csv(tenant, dynamic, "external_id\nann\n").status_code == 409
    r = tenant.public.post(
        f"/api/client/lists/{list_id}/users",
        content=b"external_id\nann\n",
        headers={"Content-Type": CSV},
    )
    assert r.status_code == 403
    assert tenant.counts()["users"] == 0


EARLY = tree({"uuid": "d", "type": "date", "group": "user", "path": "$.created_at",
              "operator": "<", "value": "2021-01-01"})  # fmt: skip


def test_a_csv_created_at_is_when_a_user_it_creates_was_created(tenant: Tenant) -> None:
    """As Parcelvoy's import: the column sets the created_at of the users the import creates
    (docs/lists.md says why not of those that exist); dynamic lists see it at once."""
    assert tenant.post("identify", {"external_id": "ann"}).status_code == 204
    ann = tenant.user("ann")["created_at"]
    early = create(tenant, {"name": "Early", "type": "dynamic", "rule": EARLY}).json()["id"]
    settled(tenant, early)
    list_id = static_list(tenant)
    text = (
        "external_id,created_at\n"
        "ann,2020-01-01\n"  # exists: keeps its created_at
        "bob,2020-03-04T05:06:07+02:00\n"
        "cat, 2020-05-06 \n"  # a date alone: 00:00 UTC
        "dan,1600000000000\n"  # epoch ms
        "eve,\n"  # empty: now
        "bob,2019-01-01\n"  # created by an earlier row: keeps the first row's
    )
    r = post_csv(tenant, list_id, text)
    assert r.status_code == 204, r.text
    created = {u: tenant.user(u)["created_at"] for u in ("ann", "bob", "cat", "dan", "eve")}
    assert created == {
        "ann": ann,
        "bob": "2020-03-04T03:06:07.000Z",
        "cat": "2020-05-06T00:00:00.000Z",
        "dan": "2020-09-13T12:26:40.000Z",
        "eve": created["eve"],
    }
    assert created["eve"] >= ann
    # the dynamic list followed in the import's transaction; a backfill agrees
    assert members(tenant, early) == ["bob", "cat", "dan"]
    again = create(tenant, {"name": "Early 2", "type": "dynamic", "rule": EARLY}).json()["id"]
    settled(tenant, again)
    assert members(tenant, again) == ["bob", "cat", "dan"]
    # the items of a user it creates are dated then, as those of a user an event creates
    bob = [e for e in feed(tenant) if e["external_id"] == "bob" and e["name"].startswith("user_")]
    assert {e["created_at"] for e in bob} == {"2020-03-04T03:06:07.000Z"}
    assert [e["name"] for e in bob] == ["user_created", "user_updated"]
