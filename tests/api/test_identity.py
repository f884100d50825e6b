"""Contract section 3, row by row, over HTTP, read back through the read API."""

from __future__ import annotations

from conftest import Tenant
from pier.domain.identity import MAX_MERGES_PER_REQUEST


def identify(t: Tenant, **body: object) -> None:
    r = t.post("identify", body)
    assert r.status_code == 204, r.text


def names(events: list[dict]) -> list[str]:
    return [e["name"] for e in reversed(events)]  # oldest first


def test_neither_exists_creates_user_with_both_ids(tenant: Tenant) -> None:
    identify(tenant, anonymous_id="a1", external_id="e1", email="e1@example.com")
    user = tenant.user("e1")
    assert user["anonymous_id"] == "a1"
    assert user["anonymous_ids"] == ["a1"]
    assert tenant.user("a1", by="anonymous_id")["id"] == user["id"]
    events = tenant.events("e1")
    assert names(events) == ["user_created", "user_updated"]
    assert events[1]["data"] == {
        "external_id": "e1",
        "anonymous_id": "a1",
        "email": "e1@example.com",
    }


def test_user_created_without_anonymous_id_gets_a_uuid(tenant: Tenant) -> None:
    identify(tenant, external_id="e1", phone=None, data={"plan": "pro"})
    user = tenant.user("e1")
    assert len(user["anonymous_id"]) == 36 and user["anonymous_id"].count("-") == 4
    # null fields are left out of user_created; the request's data is in it
    assert tenant.events("e1")[1]["data"] == {"plan": "pro", "external_id": "e1"}


def test_external_exists_anonymous_new_attaches_it(tenant: Tenant) -> None:
    identify(tenant, external_id="e1", anonymous_id="a1")
    identify(tenant, external_id="e1", anonymous_id="a2")
    user = tenant.user("e1")
    assert user["anonymous_ids"] == ["a1", "a2"]
    assert user["anonymous_id"] == "a1"
    assert tenant.user("a2", by="anonymous_id")["external_id"] == "e1"


def test_anonymous_user_gets_the_external_id(tenant: Tenant) -> None:
    identify(tenant, anonymous_id="a1", email="anon@example.com")
    before = tenant.user("a1", by="anonymous_id")
    assert before["external_id"] is None
    identify(tenant, anonymous_id="a1", external_id="e1")
    after = tenant.user("e1")
    assert after["id"] == before["id"]
    assert after["email"] == "anon@example.com"
    assert tenant.counts()["users"] == 1


def test_anonymous_user_with_other_external_id_is_not_rekeyed(tenant: Tenant) -> None:
    identify(tenant, anonymous_id="a1", external_id="e1")
    identify(tenant, anonymous_id="a1", external_id="e2")
    e1, e2 = tenant.user("e1"), tenant.user("e2")
    assert e1["id"] != e2["id"]
    assert e1["anonymous_ids"] == ["a1"]
    assert "a1" not in e2["anonymous_ids"] and len(e2["anonymous_ids"]) == 1
    assert tenant.user("a1", by="anonymous_id")["external_id"] == "e1"


def test_same_user_is_used(tenant: Tenant) -> None:
    identify(tenant, anonymous_id="a1", external_id="e1")
    identify(tenant, anonymous_id="a1", external_id="e1", locale="en")
    assert tenant.counts()["users"] == 1
    assert tenant.user("e1")["locale"] == "en"
    assert names(tenant.events("e1")) == ["user_created", "user_updated", "user_updated"]
    assert tenant.events("e1")[0]["data"] == {"locale": "en"}  # only what changed


def test_anonymous_user_is_merged_into_identified_user(tenant: Tenant) -> None:
    identify(
        tenant,
        external_id="e1",
        email="known@example.com",
        data={"plan": "pro", "shared": "from-e"},
    )
    identify(
        tenant,
        anonymous_id="a1",
        phone="+14155552671",
        timezone="Europe/Paris",
        data={"shared": "from-a", "cart": 3},
    )
    tenant.post("events", [{"name": "Viewed", "anonymous_id": "a1"}])
    device = {
        "anonymous_id": "a1",
        "device_id": "d1",
        "token": "t1",
        "os": "iOS",
        "model": "iPhone",
        "app_build": "1",
        "app_version": "1.0",
    }
    assert tenant.post("devices", device).status_code == 204
    anon_user = tenant.user("a1", by="anonymous_id")

    identify(tenant, anonymous_id="a1", external_id="e1")

    user = tenant.user("e1")
    assert tenant.user("a1", by="anonymous_id")["id"] == user["id"]
    assert user["anonymous_ids"][1:] == ["a1"]
    assert user["email"] == "known@example.com"  # E keeps its own
    assert user["phone"] == "+14155552671"  # empty fields filled from A
    assert user["timezone"] == "Europe/Paris"
    assert user["data"]["shared"] == "from-e"  # E wins on conflicts
    assert user["data"]["cart"] == 3  # keys E lacks are copied
    assert user["data"]["phone_country"] == "US"
    assert [d["device_id"] for d in user["devices"]] == ["d1"]
    assert tenant.counts()["users"] == 1
    events = tenant.events("e1")
    assert "Viewed" in names(events)
    merged = [e for e in events if e["name"] == "user_merged"]
    assert merged[0]["data"] == {"merged_user_id": anon_user["id"], "anonymous_ids": ["a1"]}
    r = tenant.secret.get(f"/api/client/users/{anon_user['id']}", params={"by": "external_id"})
    assert r.status_code == 404


def test_two_identified_users_are_never_merged(tenant: Tenant) -> None:
    identify(tenant, anonymous_id="a1", external_id="e1")
    identify(tenant, anonymous_id="a2", external_id="e2")
    identify(tenant, anonymous_id="a1", external_id="e2")
    assert tenant.counts()["users"] == 2
    assert tenant.user("e1")["anonymous_ids"] == ["a1"]
    assert tenant.user("e2")["anonymous_ids"] == ["a2"]


def test_at_least_one_id_is_required(tenant: Tenant) -> None:
    for body in ({"external_id": None}, {"anonymous_id": ""}, {"email": "x@example.com"}):
        r = tenant.post("identify", body)
        assert r.status_code == 422, body
        assert r.json()["errors"][0]["message"].startswith("anonymous_id or external_id")
    assert tenant.counts()["users"] == 0


def test_events_create_and_merge_within_one_request(tenant: Tenant) -> None:
    identify(tenant, external_id="e1")
    r = tenant.post(
        "events",
        [
            {"name": "first", "anonymous_id": "a9"},
            {"name": "second", "anonymous_id": "a9", "external_id": "e1"},
        ],
    )
    assert r.status_code == 204, r.text
    # a9's user_created and user_updated left with it
    assert names(tenant.events("e1")) == [
        "user_created",
        "user_updated",
        "first",
        "user_merged",
        "user_updated",
        "second",
    ]
    assert tenant.counts()["users"] == 1


def test_one_request_merges_at_most_100_users(tenant: Tenant) -> None:
    # 101 anonymous users and 101 identified ones; one events request linking all the pairs
    # would merge 101 users: refused whole, with a 422 that says why, and nothing written.
    n = MAX_MERGES_PER_REQUEST + 1
    for ids in (
        [{"external_id": f"e{i}"} for i in range(n)],
        [{"anonymous_id": f"a{i}"} for i in range(n)],
    ):
        r = tenant.post("events", [{"name": "seen", **i} for i in ids])
        assert r.status_code == 204, r.text
    before = tenant.counts()
    pairs = [{"name": "login", "anonymous_id": f"a{i}", "external_id": f"e{i}"} for i in range(n)]
    r = tenant.post("events", pairs)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["status"] == "error" and f"at most {MAX_MERGES_PER_REQUEST} " in body["error"]
    assert body["errors"][0]["path"] == ""
    assert tenant.counts() == before
    assert tenant.user("a0", by="anonymous_id")["external_id"] is None
    # Within the bound, the same request is taken: 100 merges.
    r = tenant.post("events", pairs[:-1])
    assert r.status_code == 204, r.text
    assert tenant.counts()["users"] == before["users"] - MAX_MERGES_PER_REQUEST
