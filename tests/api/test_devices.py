"""POST /api/client/devices."""

from __future__ import annotations

from conftest import Tenant


def device(**over: object) -> dict:
    body: dict = {
        "external_id": "e1",
        "device_id": "d1",
        "token": "t1",
        "os": "iOS",
        "os_version": "17.4",
        "model": "iPhone15,2",
        "app_build": "1",
        "app_version": "1.0",
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not ...}


def register(t: Tenant, **over: object) -> None:
    r = t.post("devices", device(**over))
    assert r.status_code == 204, r.text


def test_unknown_user_is_created_with_the_device(tenant: Tenant) -> None:
    register(tenant)
    user = tenant.user("e1")
    assert [d["device_id"] for d in user["devices"]] == ["d1"]
    d = user["devices"][0]
    assert (d["token"], d["os"], d["os_version"], d["model"]) == ("t1", "iOS", "17.4", "iPhone15,2")


def test_same_token_new_device_id_updates_one_device(tenant: Tenant) -> None:
    register(tenant)
    register(tenant, device_id="d2", app_build="2")
    devices = tenant.user("e1")["devices"]
    assert len(devices) == 1
    assert devices[0]["device_id"] == "d2" and devices[0]["app_build"] == "2"
    assert tenant.counts()["devices"] == 1


def test_token_moves_to_the_latest_user(tenant: Tenant) -> None:
    register(tenant, external_id="e1")
    register(tenant, external_id="e2")
    assert tenant.user("e1")["devices"] == []
    assert [d["token"] for d in tenant.user("e2")["devices"]] == ["t1"]


def test_token_on_another_device_is_taken_from_it(tenant: Tenant) -> None:
    register(tenant, device_id="d1", token="t1")
    register(tenant, device_id="d2", token="t2")
    register(tenant, device_id="d1", token="t2")
    by_id = {d["device_id"]: d["token"] for d in tenant.user("e1")["devices"]}
    assert by_id == {"d1": "t2", "d2": None}


def test_token_left_out_keeps_and_null_clears(tenant: Tenant) -> None:
    register(tenant)
    register(tenant, token=..., app_version="1.1")
    d = tenant.user("e1")["devices"][0]
    assert d["token"] == "t1" and d["app_version"] == "1.1"
    register(tenant, token=None)
    assert tenant.user("e1")["devices"][0]["token"] is None


def test_extra_keys_are_kept_and_merged(tenant: Tenant) -> None:
    register(tenant, sdk_version="1.0.0", push="on")
    register(tenant, sdk_version="1.0.1")
    assert tenant.user("e1")["devices"][0]["extra"] == {"sdk_version": "1.0.1", "push": "on"}


def test_extra_replace_sets_the_whole_extra(tenant: Tenant) -> None:
    """?extra=replace (what a `pier` destination sends): the other keys are the whole extra."""
    register(tenant, sdk_version="1.0.0", push="on")
    r = tenant.post("devices", device(sdk_version="1.0.1"), params={"extra": "replace"})
    assert r.status_code == 204, r.text
    assert tenant.user("e1")["devices"][0]["extra"] == {"sdk_version": "1.0.1"}
    assert tenant.post("devices", device(), params={"extra": "replace"}).status_code == 204
    assert tenant.user("e1")["devices"][0]["extra"] == {}
    register(tenant, push="off")  # ?extra=merge is the default
    r = tenant.post("devices", device(lang="de"), params={"extra": "merge"})
    assert r.status_code == 204, r.text
    assert tenant.user("e1")["devices"][0]["extra"] == {"push": "off", "lang": "de"}


def test_extra_takes_merge_or_replace_only(tenant: Tenant) -> None:
    before = tenant.counts()
    for value in ("Replace", "", "all"):
        r = tenant.post("devices", device(), params={"extra": value})
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [
            {"path": "/extra", "message": "extra must be merge or replace"}
        ]
    assert tenant.counts() == before


def test_at_most_25_devices_per_user(tenant: Tenant) -> None:
    register(tenant, device_id="with-token", token="tok")
    for i in range(30):
        register(tenant, device_id=f"d{i}", token=None)
    devices = tenant.user("e1")["devices"]
    ids = {d["device_id"] for d in devices}
    assert len(devices) == 25
    assert "with-token" in ids  # token-less devices go first
    assert {f"d{i}" for i in range(6, 30)} <= ids  # the least recently updated went


def test_cap_holds_for_devices_with_tokens(tenant: Tenant) -> None:
    for i in range(40):
        register(tenant, device_id=f"d{i}", token=f"t{i}")
    devices = tenant.user("e1")["devices"]
    assert sorted(d["device_id"] for d in devices) == sorted(f"d{i}" for i in range(15, 40))
    assert tenant.counts()["devices"] == 25
    register(tenant, external_id="e2", device_id="again", token="t0")  # a dropped token is free
    assert [d["device_id"] for d in tenant.user("e2")["devices"]] == ["again"]


def test_a_merge_keeps_the_cap(tenant: Tenant) -> None:
    for i in range(20):
        register(tenant, device_id=f"e{i}", token=f"te{i}")
    for i in range(20):
        register(tenant, external_id=..., anonymous_id="a1", device_id=f"a{i}", token=f"ta{i}")
    r = tenant.post("alias", {"anonymous_id": "a1", "external_id": "e1"})
    assert r.status_code == 204, r.text
    ids = {d["device_id"] for d in tenant.user("e1")["devices"]}
    assert ids == {f"a{i}" for i in range(20)} | {f"e{i}" for i in range(15, 20)}
    assert tenant.counts()["devices"] == 25


def test_required_fields(tenant: Tenant) -> None:
    r = tenant.post("devices", {"external_id": "e1", "device_id": "", "os": 3})
    assert r.status_code == 422
    paths = [e["path"] for e in r.json()["errors"]]
    assert paths == ["/device_id", "/os", "/model", "/app_build", "/app_version"]
    assert tenant.counts()["users"] == 0


# -- DELETE /api/client/devices/{device_id} ---------------------------------------------------
def test_delete_removes_one_device_and_frees_its_token(tenant: Tenant) -> None:
    register(tenant, device_id="d1", token="t1")
    register(tenant, device_id="a/b", token="t2")  # %2F in the path is part of the id
    r = tenant.secret.delete("/api/client/devices/a%2Fb")
    assert r.status_code == 204, r.text
    assert [d["device_id"] for d in tenant.user("e1")["devices"]] == ["d1"]
    feed = tenant.secret.get("/api/client/events", params={"limit": 1000}).json()["results"]
    [item] = [e for e in feed if e["name"] == "device_removed"]
    assert (item["user_id"], item["data"]) == (
        tenant.user("e1")["id"],
        {"device_id": "a/b", "reason": "deleted"},
    )
    register(tenant, external_id="e2", device_id="new", token="t2")  # the token is free
    assert [d["device_id"] for d in tenant.user("e2")["devices"]] == ["new"]
    assert tenant.counts()["devices"] == 2


def test_delete_of_an_unknown_device_is_a_404_that_changes_nothing(tenant: Tenant) -> None:
    register(tenant)
    before = tenant.counts()
    for path in ("nothing", "d1%00", "x" * 256, "D1"):
        r = tenant.secret.delete(f"/api/client/devices/{path}")
        assert r.status_code == 404, (path, r.text)
        assert r.json()["status"] == "error" and "No device with device_id" in r.json()["error"]
    assert tenant.counts() == before
    assert tenant.public.delete("/api/client/devices/d1").status_code == 403
    assert tenant.counts() == before


def test_delete_repeated_with_its_idempotency_key_answers_as_the_first(tenant: Tenant) -> None:
    register(tenant)
    headers = {"Idempotency-Key": "k1"}
    assert tenant.secret.delete("/api/client/devices/d1", headers=headers).status_code == 204
    register(tenant)  # back again: a retried DELETE must not remove it
    assert tenant.secret.delete("/api/client/devices/d1", headers=headers).status_code == 204
    assert [d["device_id"] for d in tenant.user("e1")["devices"]] == ["d1"]
    r = tenant.secret.delete("/api/client/devices/d2", headers=headers)
    assert r.status_code == 409, r.text
