"""Bad input (contract section 2): each gets a clear error and writes nothing."""

from __future__ import annotations

import gzip

import httpx
import pytest

from conftest import Tenant

EMPTY = {"users": 0, "user_anonymous_ids": 0, "devices": 0, "events": 0}


@pytest.fixture(autouse=True)
def nothing_written(tenant: Tenant):  # type: ignore[no-untyped-def]
    yield
    assert tenant.counts() == EMPTY


def raw(t: Tenant, path: str, content: bytes, content_type: str = "application/json", **h: str):
    headers = {"Content-Type": content_type, **h}
    return t.public.post(f"/api/client/{path}", content=content, headers=headers)


@pytest.mark.parametrize("path", ["identify", "alias", "devices", "events"])
def test_malformed_json_is_400_and_says_what(tenant: Tenant, path: str) -> None:
    r = raw(tenant, path, b'{"external_id": "e1",')
    assert r.status_code == 400
    assert r.json()["status"] == "error"
    assert "not valid JSON" in r.json()["error"]


def test_body_over_1_mib_is_413(tenant: Tenant) -> None:
    big = b'[{"name": "x", "external_id": "e1", "data": {"s": "' + b"x" * (1 << 20) + b'"}}]'
    assert raw(tenant, "events", big).status_code == 413


def test_gzip_bomb_stops_at_the_limit(tenant: Tenant) -> None:
    bomb = gzip.compress(b"[" + b" " * (20 << 20) + b"]")
    assert len(bomb) < 100_000
    r = raw(tenant, "events", bomb, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413


@pytest.mark.parametrize("ctype", ["application/x-www-form-urlencoded", "text/xml"])
def test_other_content_types_are_415(tenant: Tenant, ctype: str) -> None:
    r = raw(tenant, "identify", b'{"external_id": "e1"}', ctype)
    assert r.status_code == 415
    assert ctype in r.json()["error"]


def test_wrong_types_and_long_strings_are_422_with_paths(tenant: Tenant) -> None:
    r = tenant.post(
        "identify",
        {
            "external_id": "e" * 256,
            "anonymous_id": 7,
            "email": ["x"],
            "phone": "1" * 65,
            "locale": "l" * 51,
            "data": "nope",
        },
    )
    assert r.status_code == 422
    assert [e["path"] for e in r.json()["errors"]] == [
        "/anonymous_id",
        "/external_id",
        "/email",
        "/phone",
        "/locale",
        "/data",
    ]
    assert r.json()["error"] == r.json()["errors"][0]["message"]


def test_events_problems_listed_per_event(tenant: Tenant) -> None:
    body = [
        {"name": "ok", "external_id": "e1"},
        {"external_id": None, "anonymous_id": None, "name": 5},
        "not an object",
        {"name": "x", "anonymous_id": "a", "data": [1], "user": {"timezone": "nowhere"}},
    ]
    r = tenant.post("events", body)
    assert r.status_code == 422
    assert [e["path"] for e in r.json()["errors"]] == [
        "/1/name",
        "/1",
        "/2",
        "/3/data",
        "/3/user/timezone",
    ]


def test_events_body_must_be_an_array(tenant: Tenant) -> None:
    r = tenant.post("events", {"name": "x", "external_id": "e1"})
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {"path": "", "message": "the body must be a JSON array of events"}
    ]


def test_null_ids_are_422(tenant: Tenant) -> None:
    for path, body in (
        ("identify", {"external_id": None}),
        ("events", [{"name": "x", "external_id": None}]),
        ("alias", {"anonymous_id": None, "external_id": "e1"}),
    ):
        assert tenant.post(path, body).status_code == 422, path


def test_unknown_path_is_json_404_with_or_without_key(tenant: Tenant) -> None:
    for client in (tenant.public, httpx.Client(base_url=tenant.server.url)):
        r = client.get("/api/client/nothing-here")
        assert r.status_code == 404
        assert r.json()["status"] == "error"
        assert r.headers["access-control-allow-origin"] == "*"


def test_wrong_method_is_json_405_with_allow(tenant: Tenant) -> None:
    r = tenant.public.get("/api/client/identify")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert "GET" in r.json()["error"]


def test_cors_preflight_and_headers(tenant: Tenant) -> None:
    r = httpx.options(
        f"{tenant.server.url}/api/client/events",
        headers={
            "Origin": "https://shop.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-headers"] == "authorization,content-type"
    assert int(r.headers["access-control-max-age"]) > 0
    r = tenant.post("identify", {})
    assert r.status_code == 422 and r.headers["access-control-allow-origin"] == "*"
