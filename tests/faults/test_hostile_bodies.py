"""Bodies the fuzzer found 5xx answers for, on every backend and every ingestion endpoint:
U+0000 in any string (PostgreSQL cannot store it: it was a 503 there, stored on SQLite) is a 422
everywhere; JSON nested past msgspec's limit (a RecursionError: it was a 500) is a 400."""

from __future__ import annotations

import pytest

from conftest import Tenant

DEVICE = {"device_id": "d", "os": "iOS", "model": "x", "app_build": "1", "app_version": "1"}
NUL_BODIES = [
    ("events", [{"name": "a\0b", "external_id": "u"}], "/0/name"),
    ("events", [{"name": "n", "external_id": "u", "data": {"k": ["x", "a\0"]}}], "/0/data/k/1"),
    ("events", [{"name": "n", "external_id": "u", "data": {"k\0": 1}}], "/0/data/k\0"),
    ("identify", {"external_id": "u\0"}, "/external_id"),
    ("identify", {"external_id": "u", "data": {"a/b": "\0"}}, "/data/a~1b"),
    ("alias", {"anonymous_id": "a\0", "external_id": "u"}, "/anonymous_id"),
    ("devices", {"external_id": "u", **DEVICE, "token": "\0"}, "/token"),
    ("track", {"event": "e\0", "external_id": "u"}, "/event"),
    ("segment", {"batch": [{"type": "track", "userId": "u", "event": "\0"}]}, "/batch/0/event"),
]


@pytest.mark.parametrize(("path", "body", "pointer"), NUL_BODIES)
def test_nul_characters_are_a_422_naming_where(
    tenant: Tenant, path: str, body: object, pointer: str
) -> None:
    r = tenant.post(path, body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["path"] == pointer
    assert tenant.counts() == {k: 0 for k in tenant.counts()}


@pytest.mark.parametrize("path", ["events", "identify", "alias", "devices", "track", "segment"])
def test_json_nested_too_deeply_is_a_400(tenant: Tenant, path: str) -> None:
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    for raw in (b"[" * 100_000, b'[{"name":"n","external_id":"u","data":' + deep + b"}]", deep):
        r = tenant.public.post(
            f"/api/client/{path}", content=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, r.text
        assert r.json()["status"] == "error"
    assert tenant.counts()["events"] == 0


def test_nesting_within_the_limit_is_stored(tenant: Tenant) -> None:
    data: object = 1
    for _ in range(200):
        data = {"a": data}
    assert (
        tenant.post("events", [{"name": "deep", "external_id": "u", "data": data}]).status_code
        == 204
    )
    assert tenant.events("u")[0]["data"] == data
