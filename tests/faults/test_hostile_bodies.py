"""Bodies the fuzzer found 5xx answers for, on every backend and every ingestion endpoint:
U+0000 in any string (PostgreSQL cannot store it: it was a 503 there, stored on SQLite) is a 422
everywhere; JSON nested past msgspec's limit (a RecursionError: it was a 500) is a 400."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest

from conftest import Tenant
from faults import test_hostile_params
from pier.portal.views import PRETTY_MAX, pretty

portal = test_hostile_params.portal  # fixture: an HTTP client logged in to the portal
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


ROUTES = ["events", "identify", "alias", "devices", "track", "segment"]


@pytest.mark.parametrize("path", ROUTES)
def test_json_nested_past_the_limit_is_refused(tenant: Tenant, path: str) -> None:
    """Past 32 levels (issue 14, item 5), however deep: a 422; JSON that is not JSON: a 400."""
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    for raw, status in (
        (b"[" * 100_000, 400),
        (b'[{"name":"n","external_id":"u","data":' + deep + b"}]", 422),
        (deep, 422),
    ):
        r = tenant.public.post(
            f"/api/client/{path}", content=raw, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == status, r.text
        assert r.json()["status"] == "error"
    assert tenant.counts()["events"] == 0


def nested(depth: int, leaf: object = 1) -> object:
    data = leaf
    for _ in range(depth):
        data = {"a": data}
    return data


# Each route with the place where a stored object of the client's goes (`@` in the body)
PLACES = {
    "events": ([{"name": "n", "external_id": "u", "data": "@"}], "/0/data"),
    "identify": ({"external_id": "u", "data": "@"}, "/data"),
    "alias": ({"anonymous_id": "a", "external_id": "u", "extra": "@"}, "/extra"),
    "devices": ({"external_id": "u", **DEVICE, "sdk": "@"}, "/sdk"),
    "track": ({"event": "e", "external_id": "u", "properties": "@"}, "/properties"),
    "segment": (
        {"batch": [{"type": "track", "userId": "u", "event": "e", "properties": "@"}]},
        "/batch/0/properties",
    ),
}


def with_value(path: str, raw_value: bytes) -> tuple[bytes, str]:
    body, where = PLACES[path]
    return json.dumps(body).encode().replace(b'"@"', raw_value), where


def post_raw(tenant: Tenant, path: str, raw: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    return tenant.public.post(f"/api/client/{path}", content=raw, headers=headers)


@pytest.mark.parametrize("path", ROUTES)
def test_data_nested_past_32_levels_is_a_422_naming_where(tenant: Tenant, path: str) -> None:
    body, where = PLACES[path]
    depth = where.count("/") + 1  # the stored object's level, the body's own being 1
    for extra in (40 - depth, 34 - depth):  # nested(k) ends at level depth + k - 1
        raw, where = with_value(path, json.dumps(nested(extra)).encode())
        r = post_raw(tenant, path, raw)
        assert r.status_code == 422, r.text
        [problem] = r.json()["errors"]
        assert problem["path"] == where + "/a" * (33 - depth), problem
        assert "32 levels" in problem["message"]
    assert tenant.counts() == {k: 0 for k in tenant.counts()}


NUMBERS = {
    "2^63": (b'{"n": 9223372036854775808}', "/n"),
    "-2^63": (b'{"n": [1, -9223372036854775808]}', "/n/1"),
    "5000 digits": (b'{"x": {"n": ' + b"7" * 5000 + b"}}", "/x/n"),
    "1e999": (b'{"a/b": 1e999}', "/a~1b"),
    "-1.5E+400": (b'{"n": -1.5E+400}', "/n"),
    "400 digits float": (b'{"n": ' + b"9" * 400 + b".5}", "/n"),
    "twice the same key": (b'{"n": 1e999, "n": 1}', "/n"),
}


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("number", NUMBERS, ids=list(NUMBERS))
def test_numbers_no_parser_can_read_are_a_422_naming_where(
    tenant: Tenant, path: str, number: str
) -> None:
    value, inner = NUMBERS[number]
    raw, where = with_value(path, value)
    r = post_raw(tenant, path, raw)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["path"] == where + inner
    assert "2^63-1" in r.json()["errors"][0]["message"]
    assert tenant.counts() == {k: 0 for k in tenant.counts()}


def test_data_at_the_limits_is_stored_and_reads_back(tenant: Tenant) -> None:
    at_limit = {
        "max": 2**63 - 1,
        "min": -(2**63 - 1),
        "big float": 1.7976931348623157e308,
        "tiny": 5e-324,
        "digits in a string": "9" * 5000,
        "brackets in strings": ["]]]", "[[[", '\\"{', "}"],
        "deep": nested(29),  # event data is level 3 of the body: 32 in all
    }
    r = tenant.post("events", [{"name": "limits", "external_id": "u", "data": at_limit}])
    assert r.status_code == 204, r.text
    r = tenant.post("identify", {"external_id": "u", "data": at_limit})
    assert r.status_code == 204, r.text
    event = next(e for e in tenant.events("u") if e["name"] == "limits")
    for stored in (event["data"], tenant.user("u")["data"]):
        assert stored.pop("big float") == at_limit["big float"]
        assert stored == {k: v for k, v in at_limit.items() if k != "big float"}


def test_the_portal_user_page_bounds_what_it_renders(tenant: Tenant, portal: httpx.Client) -> None:
    """50 events of wide data nested near the limit: indented, each was ~200 kB of the page."""
    wide = nested(27, list(range(3000)))  # data at level 3: 3 + 27 = 30 levels, then the list
    events = [{"name": f"e{i}", "external_id": "u", "data": wide} for i in range(50)]
    assert tenant.post("events", events).status_code == 204
    uid = tenant.user("u")["id"]
    r = portal.get(f"/projects/{tenant.id}/users/{uid}")
    assert r.status_code == 200
    assert len(r.content) < 1_000_000, len(r.content)
    assert r.text.count("cut here:") == 50


def test_pretty_printing_never_recurses_without_bound() -> None:
    """Data stored before the nesting rule (960 deep was accepted) is shown as stored."""
    deep = b'{"a":' * 960 + b"1" + b"}" * 960
    assert pretty(msgspec.Raw(deep)) == deep.decode()
    wide = b'{"a":' * 960 + b'"' + b"x" * 50_000 + b'"' + b"}" * 960
    shown = pretty(msgspec.Raw(wide))
    assert shown == f"{wide[:PRETTY_MAX].decode()}\n… cut here: {len(wide):,} characters in all"
